"""Set-up of the mmseg tests: mmseg's default scope, one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _mmseg_scope(one_thread):
    from mmengine.registry import init_default_scope

    import hem_plugins.benchmark.mmseg  # noqa: F401  (registers the losses, hook, dataset)

    init_default_scope("mmseg")
