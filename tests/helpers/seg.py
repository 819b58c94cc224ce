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
