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


@pytest.fixture(params=["reference", "chunked", "cpu_kernel"])
def implementation(request, monkeypatch):
    """The test runs with the switch on one implementation (``hem_plugins.implementations.use``;
    the default params: the three that run on the CPU; parametrize ``implementation``
    with ``indirect=True`` for others, ``"auto"`` included), and with tiny chunks (7 logits)
    so that a case spans many chunks and threads. ``cpu_kernel`` skips where the kernel did
    not build. Calls the implementation cannot run raise; :func:`helpers.cases.runs_on`
    skips them."""
    from hem_plugins import implementations
    from hem_plugins.implementations import chunked, cpu_kernel

    name = request.param
    monkeypatch.setattr(chunked, "CHUNK_ELEMS", 7)
    if name == "cpu_kernel" and not cpu_kernel.available():
        pytest.skip(f"the C++ kernel did not build: {cpu_kernel.BUILD_ERROR}")
    with implementations.use(name):
        yield name


# Each conftest.py is named ``conftest``: they are not modules to collect doctests from.
collect_ignore_glob = ["*conftest.py"]
