"""Train an mmseg 1.x segmentor with mmengine's Runner (the flags of mmseg's tools/train.py).

    python tools/train_seg.py configs/mmseg/fcn-r18tiny_digitmosaic_hemplus.py
    python tools/train_seg.py CONFIG --work-dir DIR --cfg-options train_cfg.max_iters=100
    tools/dist_train_seg.sh CONFIG 2            # DDP on torchrun (gloo on CPU, nccl on GPU)

The work is :mod:`hem_plugins.benchmark.mmseg.runner` (``train``, ``fit``, ``evaluate``); this
file is its command line.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

from hem_plugins.benchmark.mmseg.runner import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Train a segmentor (mmseg 1.x, mmengine Runner)")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs and models")
    parser.add_argument(
        "--resume",
        nargs="?",
        type=str,
        const="auto",
        help="resume from the latest checkpoint in the work dir, or from the given one",
    )
    parser.add_argument("--amp", action="store_true", default=False, help="mixed precision")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings of the config, key=value (e.g. train_cfg.max_iters=100)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    work_dir = args.work_dir or osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    resume: bool | str = False
    if args.resume == "auto":
        resume = True
    elif args.resume:
        resume = args.resume
    metrics = train(
        args.config,
        work_dir,
        args.cfg_options,
        resume=resume,
        amp=args.amp,
        launcher=args.launcher,
    )
    from mmengine.dist import get_rank

    if get_rank() == 0 and metrics:
        print("final validation: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
