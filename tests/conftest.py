"""Fixtures shared by every test directory.

The tests mirror the package: ``core/`` (the public losses, margins, settled
samples), ``implementations/`` (the implementations of the loss and the choice
between them), ``mmseg/`` and ``avalanche/`` (the adapters), ``benchmark/``
(the experiments), ``tools/`` (the command lines) and ``packaging/``. Shared
helper modules are in ``helpers/``; this file puts ``tests/`` on ``sys.path``
(pytest's rootdir-relative import), so tests import them as ``helpers.x``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: the machines are shared and the models tiny, and one
    thread is several times faster than two there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
