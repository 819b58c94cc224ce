"""Count the pixels per class of the training set of any mmseg 1.x config.

    python tools/class_counts.py CONFIG [--out FILE] [--workers N] [--cfg-options k=v ...]

The training dataset (``train_dataloader.dataset``) is built through its own
dataset class with only its ``LoadAnnotations`` step (no image decoding), so
``label_map``/``reduce_zero_label`` apply; ``ignore_index`` pixels are not
counted; every image counts once (repeat wrappers are unwrapped). The JSON
(counts, num_images, classes, fingerprint) is what
``loss_decode=dict(type='HEMPlusLoss', class_counts=FILE)`` and
``HEMMarginHook(class_counts=FILE)`` read.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys


def class_counts(config: str, out: str | None = None, workers: int = 2, cfg_options=None) -> dict:
    """Count, write ``out`` (default ``work_dirs/<config name>/class_counts.json``), return the dict."""
    from mmengine.config import Config

    from hem_plugins.margins import class_margins
    from hem_plugins.mmseg.counts import build_count_dataset, count_pixels, write_counts

    if not osp.isfile(config):
        raise FileNotFoundError(f"config file {config!r} does not exist")
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    dataset_cfg = cfg.get("train_dataloader", {}).get("dataset")
    if dataset_cfg is None:
        raise ValueError(f"{config}: the config has no train_dataloader.dataset")
    stats = count_pixels(build_count_dataset(dataset_cfg), num_workers=workers)
    out = out or osp.join("work_dirs", osp.splitext(osp.basename(config))[0], "class_counts.json")
    write_counts(stats, out)

    import torch
    from rich.console import Console
    from rich.table import Table

    counts = torch.tensor(stats["counts"], dtype=torch.float64)
    equivalents = counts * (stats["num_images"] / counts.sum())
    margins = class_margins(equivalents)
    table = Table(title=f"{stats['num_images']} images, {stats['num_pixels']} labelled pixels")
    for col in ("class", "pixels", "share", "image-equivalents", "HEM+ margin"):
        table.add_column(col, justify="right")
    for name, c, e, m in zip(stats["classes"], stats["counts"], equivalents, margins, strict=True):
        table.add_row(str(name), str(c), f"{c / stats['num_pixels']:.4f}", f"{e:.1f}", f"{m:.3f}")
    console = Console()
    console.print(table)
    console.print(f"written to {out} (fingerprint {stats['fingerprint']})")
    return stats


def main(argv: list[str] | None = None) -> dict:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Pixels per class of an mmseg training set")
    parser.add_argument("config", help="mmseg config file")
    parser.add_argument("--out", help="output JSON (default work_dirs/<config>/class_counts.json)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override settings")
    args = parser.parse_args(argv)
    return class_counts(args.config, args.out, args.workers, args.cfg_options)


if __name__ == "__main__":
    main()
