"""Fixtures of the Avalanche adapter tests."""

from __future__ import annotations

import warnings

import pytest

from hem_plugins.benchmark.avalanche import SplitDigits


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*positional arguments.*")
        warnings.filterwarnings("ignore", message="No loggers specified.*")
        yield


@pytest.fixture(scope="session")
def digits():
    """SplitDigits, 5 experiences of 2 classes, seed 0."""
    return SplitDigits(n_experiences=5, seed=0)
