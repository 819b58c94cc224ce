"""Count the pixels per class of the training set of any mmseg 1.x config.

    python tools/class_counts.py CONFIG [--out FILE] [--workers N] [--cfg-options k=v ...]

The training dataset (``train_dataloader.dataset``) is built through its own
dataset class with only its ``LoadAnnotations`` step (no image decoding), so
``label_map``/``reduce_zero_label`` apply; ``ignore_index`` pixels are not
counted; every image counts once (repeat wrappers are unwrapped). The JSON
(counts, num_images, classes, fingerprint) is what
``loss_decode=dict(type='HEMPlusLoss', class_counts=FILE)`` and
``HEMMarginHook(class_counts=FILE)`` read. The counting is
:func:`hem_plugins.mmseg.counts.count_config`; this file prints its table.
"""

from __future__ import annotations

import argparse


def show(stats: dict, out: str) -> None:
    """Print the pixels, share, image-equivalents and HEM+ margin of every class."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from hem_plugins.margins import class_margins

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


def main(argv: list[str] | None = None) -> dict:
    from mmengine.config import DictAction

    from hem_plugins.mmseg.counts import count_config, default_counts_path

    parser = argparse.ArgumentParser(description="Pixels per class of an mmseg training set")
    parser.add_argument("config", help="mmseg config file")
    parser.add_argument("--out", help="output JSON (default work_dirs/<config>/class_counts.json)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override settings")
    args = parser.parse_args(argv)
    out = args.out or default_counts_path(args.config)
    stats = count_config(args.config, out, args.workers, args.cfg_options)
    show(stats, out)
    return stats


if __name__ == "__main__":
    main()
