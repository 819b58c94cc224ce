"""Paths and helpers shared by the mmseg tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "mmseg"
DIGIT_CONFIG = {
    v: CONFIGS / f"fcn-r18tiny_digitmosaic_{v}.py"
    for v in ("ce", "hem", "hemplus", "dice", "ce_dice", "ohem", "focal", "la")
}
REAL_CONFIGS = sorted((CONFIGS / "real").glob("*.py"))


def subprocess_env() -> dict[str, str]:
    """The environment of a training subprocess: this checkout's package and ``tests/`` first
    on its path (for ``helpers.margin_probe``), one OpenMP thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


# Tiny Runner runs on DigitMosaic: no worker processes, validation on 10 images, a log line
# per iteration (mmengine cfg-options, for ``hem_plugins.benchmark.mmseg.runner.train``).
TINY_RUN = {
    "train_dataloader.batch_size": 2,
    "train_dataloader.num_workers": 0,
    "train_dataloader.persistent_workers": False,
    "val_dataloader.num_workers": 0,
    "val_dataloader.persistent_workers": False,
    "val_dataloader.dataset.indices": 10,
    "default_hooks.logger.interval": 1,
}


def tiny_schedule(iters: int, ckpt_every: int) -> dict:
    """``iters`` iterations, validation at the end, PolyLR, a checkpoint every ``ckpt_every``."""
    return {
        "train_cfg.max_iters": iters,
        "train_cfg.val_interval": iters,
        "param_scheduler": [dict(type="PolyLR", power=0.9, begin=0, end=iters, by_epoch=False)],
        "default_hooks.checkpoint.interval": ckpt_every,
    }
