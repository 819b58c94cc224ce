"""Evaluate a trained mmseg 1.x segmentor with mmengine's Runner (mmseg's tools/test.py flags).

python tools/test_seg.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import os

from hem_plugins.benchmark.mmseg.runner import test


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
