"""Evaluate a trained mmseg 1.x segmentor with mmengine's Runner (mmseg's tools/test.py flags).

python tools/test_seg.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.train_seg import _init_cpu_process_group, build_cfg, mmengine_checkpoints  # noqa: E402


def test(
    config: str,
    checkpoint: str,
    work_dir: str | None = None,
    cfg_options: dict[str, Any] | None = None,
    *,
    launcher: str = "none",
) -> dict[str, float]:
    """Run the config's test loop on ``checkpoint``; returns the test metrics (e.g. mIoU)."""
    from mmengine.runner import Runner

    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
    cfg = build_cfg(config, work_dir, cfg_options, launcher=launcher)
    cfg.load_from = checkpoint
    _init_cpu_process_group(launcher)
    runner = Runner.from_cfg(cfg)
    with mmengine_checkpoints():
        metrics = runner.test()
    return {k: float(v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Test a segmentor (mmseg 1.x, mmengine Runner)")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="the dir to save logs and metrics")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override settings")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    metrics = test(
        args.config, args.checkpoint, args.work_dir, args.cfg_options, launcher=args.launcher
    )
    print("test: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
