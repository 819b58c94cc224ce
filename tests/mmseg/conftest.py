"""Shared set-up of the mmseg adapter tests: mmseg scope, one torch thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _mmseg_scope():
    from mmengine.registry import init_default_scope

    import hem_plugins.mmseg  # noqa: F401  (registers the losses, hook, dataset)

    init_default_scope("mmseg")
    # The machines are shared: one intra-op thread is several times faster than two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
