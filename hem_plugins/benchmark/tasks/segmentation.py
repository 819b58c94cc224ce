"""3e. Semantic segmentation through the mmseg plugin: DigitMosaic, CE vs Dice vs HEM vs HEM+.

Each loss trains its shipped config ``configs/mmseg/fcn-r18tiny_digitmosaic_<loss>.py``
(tiny FCN on a ResNetV1c-18 with a quarter of the channels; the configs differ only
in the loss of both heads; HEM and HEM+ get their margins from ``HEMMarginHook``)
through ``tools/train_seg.py``'s ``train()``, with the profile's iteration count and
the poly schedule stretched to it. Metrics are mmseg's ``IoUMetric`` on the 100
validation images, as the tool returns them (percent). mmengine's Runner picks the
device itself (a GPU when torch sees one), whatever ``--device`` says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..losses import loss_label
from .base import REPO_ROOT, Context, aggregate, fmt, load_tool, md_table, save_figure, verdict

#: Benchmark loss name -> suffix of the DigitMosaic config.
CONFIG_SUFFIX = {"ce": "ce", "dice": "dice", "hem": "hem", "hem_plus": "hemplus"}
METRICS = ("mIoU", "mAcc", "aAcc")


def seeds_to_run(settings: dict) -> list[int]:
    """The profile's seeds, cut to ``max_seeds`` when the task sets it (costly tasks)."""
    seeds = [int(s) for s in settings.get("seeds", [0])]
    n = settings.get("max_seeds")
    return seeds[: int(n)] if n else seeds


def skip_seed(task, settings: dict, seed: int, ctx: Context) -> bool:
    """True (and the progress bar advanced) when ``seed`` is beyond ``max_seeds``."""
    if seed in seeds_to_run(settings):
        return False
    for _ in range(task.units(settings)):
        ctx.advance(f"{task.name} seed {seed}: skipped (max_seeds)")
    return True


def schedule_options(iters: int, seed: int, lr: float | None = None) -> dict:
    """``cfg_options`` that shorten the CPU schedule of ``configs/mmseg/_base_/schedule_cpu.py``.

    ``PolyLR``'s ``end`` is fixed when the config is parsed, so it is overridden
    with ``max_iters`` (else a short run would stop at a high lr); one validation
    at the end; no checkpoint; in-process data loading (no worker start-up); only
    mmengine's warnings on the console.
    """
    opts = {
        "train_cfg.max_iters": iters,
        "train_cfg.val_interval": iters,
        "param_scheduler.0.end": iters,
        "default_hooks.checkpoint.interval": iters,
        "default_hooks.checkpoint.save_last": False,
        "default_hooks.logger.interval": max(1, min(100, iters)),
        "train_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "val_dataloader.num_workers": 0,
        "val_dataloader.persistent_workers": False,
        "randomness.seed": seed,
        "log_level": "WARNING",  # mmengine's INFO lines would bury the progress bar
    }
    if lr is not None:
        opts["optim_wrapper.optimizer.lr"] = lr
    return opts


class SegmentationTask:
    name = "segmentation"
    title = "3e. Semantic segmentation (DigitMosaic, mmseg)"
    claim = (
        "HEM and HEM+ give better semantic segmentation than CE (higher mIoU), HEM+ by "
        "helping the rare classes (higher mean per-class accuracy, mAcc)."
    )

    def units(self, settings: dict) -> int:
        return len(settings["losses"])

    def config_for(self, settings: dict, loss: str) -> Path:
        if loss not in CONFIG_SUFFIX:
            raise ValueError(
                f"segmentation: unknown loss {loss!r}; choose from {sorted(CONFIG_SUFFIX)}"
            )
        path = REPO_ROOT / settings["config"].format(loss=CONFIG_SUFFIX[loss])
        if not path.is_file():
            raise FileNotFoundError(f"segmentation config for {loss!r} not found: {path}")
        return path

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if skip_seed(self, settings, seed, ctx):
            return {"records": []}
        train = load_tool("train_seg").train
        iters = int(settings["iters"])
        recs = []
        for loss in settings["losses"]:
            config = self.config_for(settings, loss)
            ctx.advance(f"{self.name} {loss} {iters} it seed {seed}")
            work_dir = (ctx.work_dir or Path("work_dirs")) / "segmentation" / f"{loss}_{seed}"
            metrics = train(str(config), str(work_dir), schedule_options(iters, seed))
            missing = [m for m in METRICS if m not in metrics]
            if missing:
                raise RuntimeError(f"segmentation {loss}: IoUMetric returned no {missing}")
            recs.append({
                "group": {"dataset": "digitmosaic", "loss": loss},
                "metrics": {m: float(metrics[m]) for m in METRICS},
                "extra": {"iters": iters, "config": str(config.relative_to(REPO_ROOT)),
                          "device": "cuda" if torch.cuda.is_available() else "cpu"},
            })  # fmt: skip
        return {"records": recs}

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = aggregate(result, ("loss",))
        if not agg:
            return []
        losses = [k[0] for k in agg]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.38
        for i, metric in enumerate(("mIoU", "mAcc")):
            vals = [np.asarray(agg[(lo,)][metric]) for lo in losses]
            xs = np.arange(len(losses)) + (i - 0.5) * width
            means = [v.mean() for v in vals]
            stds = [v.std() for v in vals]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=metric)
        ax.set_xticks(np.arange(len(losses)), [loss_label(lo) for lo in losses])
        ax.set_ylabel("%")
        ax.set_title("DigitMosaic validation (mmseg IoUMetric)")
        ax.legend(fontsize=8)
        return [save_figure(fig, out_dir, f"{self.name}_digitmosaic.png")]

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        agg = aggregate(result, ("loss",))
        rows = [[loss_label(k[0])] + [fmt(m[x], scale=1.0, digits=2) for x in METRICS]
                for k, m in agg.items()]  # fmt: skip
        lines = []
        for ours, other, metric in (
            ("hem", "ce", "mIoU"),
            ("hem_plus", "ce", "mIoU"),
            ("hem", "dice", "mIoU"),
            ("hem_plus", "dice", "mIoU"),
            ("hem_plus", "hem", "mAcc"),
        ):
            a, b = agg.get((ours,)), agg.get((other,))
            if a and b:
                lines.append(
                    f"- {loss_label(ours)} vs {loss_label(other)}, {metric}: "
                    f"{fmt(a[metric], 1.0, 2)} vs {fmt(b[metric], 1.0, 2)}: "
                    f"**{verdict(a[metric], b[metric])}** (claim: {loss_label(ours)} higher)"
                )
        seeds = seeds_to_run({"seeds": result["seeds"], **s})
        parts = [
            f"## {self.title}",
            "Model: FCN on a ResNetV1c-18 with a quarter of the channels, auxiliary FCN head, BN, "
            "no pretrained weights (`configs/mmseg/_base_/fcn_r18_tiny.py`). Data: DigitMosaic "
            "(64x64, 11 classes, 400 train / 100 val images; background 88 % of the pixels). "
            f"SGD lr {s.get('lr') or 0.05} (all losses), momentum 0.9, wd 5e-4, poly decay "
            f"(power 0.9) over {s['iters']} iterations of batch 8; one validation at the end. "
            "Configs: `"
            + s["config"]
            + "` with "
            + ", ".join(f"`{CONFIG_SUFFIX[x]}`" for x in s["losses"])
            + ". Margins set by `HEMMarginHook`: HEM `sqrt(2000 / 400) = 2.24`; HEM+ one per "
            "class from the training pixel frequencies (background 0.72 ... digit 9 11.32). "
            "Seeds (`randomness.seed`: weights and batch order; the images are fixed) "
            + ", ".join(str(x) for x in seeds)
            + ".",
            md_table(["loss", "mIoU %", "mAcc %", "aAcc %"], rows),
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
        ]
        parts += [f"![DigitMosaic mIoU and mAcc]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    def headline(self, result: dict, dataset: str | None = None) -> dict[str, dict[str, str]]:
        col = {k[0]: fmt(m["mIoU"], 1.0, 1) for k, m in aggregate(result, ("loss",)).items()}
        return {"3e mIoU % (DigitMosaic)": col} if col else {}


TASK = SegmentationTask()
