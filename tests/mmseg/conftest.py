"""Shared set-up of the mmseg adapter tests: mmseg scope, one torch thread, the configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "mmseg"
DIGIT_CONFIG = {
    v: CONFIGS / f"fcn-r18tiny_digitmosaic_{v}.py" for v in ("ce", "hem", "hemplus", "dice")
}
REAL_CONFIGS = sorted((CONFIGS / "real").glob("*.py"))


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


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")]
    )
    env["OMP_NUM_THREADS"] = "1"
    return env
