"""3e. Semantic segmentation through the mmseg plugin: DigitMosaic, CE, CE+OHEM, Focal, Dice,
HEM and HEM+.

Each loss trains its shipped config ``configs/mmseg/fcn-r18tiny_digitmosaic_<loss>.py``
(tiny FCN on a ResNetV1c-18 with a quarter of the channels; the configs differ only in
the loss of both heads, or in mmseg's ``OHEMPixelSampler`` on the decode head; HEM and
HEM+ get their margins from ``HEMMarginHook``) through ``tools/train_seg.py``'s ``fit()``,
with the profile's iteration count and the poly schedule stretched to it.

The protocol (:mod:`..protocol`) of one run (loss, seed):

* **Data.** ``DigitMosaicDataset``'s ``carve`` splits the 400 training images by the
  run's data seed: ``selection.val_fraction`` of them (80) are the validation split,
  the rest (320) the training part. The 100 ``val`` images of the dataset are the test
  set; no selection sees them.
* **Selection.** In ``selection.mode = "validation"`` the loss trains on the training
  part at every lr of the grid (``tasks.segmentation.selection.grid``) and the lr with
  the best validation mIoU is kept; in ``"tuned"`` mode the lr is read from the tuned
  file and the loss trains once, on the same training part (so both modes train on the
  same images).
* **Evaluation.** The kept model (not retrained) is evaluated with mmseg's
  ``IoUMetric`` on the test images (``mIoU``, ``mAcc``, ``aAcc``, percent) and on its
  own training part: ``train_acc`` is the mean per-class pixel accuracy (``mAcc``) there,
  as a fraction. (``aAcc`` would be a weak test of fit: background is 88 % of the
  pixels.) ``diverged`` is 1 when the final loss or a weight is not finite.

mmengine's Runner picks the device itself (a GPU when torch sees one), whatever
``--device`` says.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...resources import config_path, display_path
from .. import protocol
from ..losses import loss_label
from .base import (
    Context,
    aggregate,
    claim_cell,
    fmt,
    md_table,
    per_seed_table,
    records,
    save_figure,
)

#: Benchmark loss name -> suffix of the DigitMosaic config.
CONFIG_SUFFIX = {"ce": "ce", "ohem": "ohem", "focal": "focal", "dice": "dice", "hem": "hem",
                 "hem_plus": "hemplus", "hem_rows": "hem_rows", "hem_floor": "hem_floor"}  # fmt: skip
#: mmseg IoUMetric on the test images, percent.
METRICS = ("mIoU", "mAcc", "aAcc")
#: IoUMetric's metric on the training part that ``train_acc`` reports (as a fraction).
FIT_METRIC = "mAcc"
#: The selection score: mIoU (percent) on the validation split carved from the training images.
SELECTION_METRIC = "val mIoU %"
#: ``(ours, theirs, metric)``: the claims the report draws verdicts for ("ours higher").
CLAIMS = (
    ("hem", "ce", "mIoU"),
    ("hem_plus", "ce", "mIoU"),
    ("hem", "ohem", "mIoU"),
    ("hem_plus", "ohem", "mIoU"),
    ("hem", "focal", "mIoU"),
    ("hem_plus", "focal", "mIoU"),
    ("hem", "dice", "mIoU"),
    ("hem_plus", "dice", "mIoU"),
    ("hem_plus", "hem", "mAcc"),
)
DATASET = "digitmosaic"
_RUN_IDS = itertools.count()


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
        "test_dataloader.num_workers": 0,
        "test_dataloader.persistent_workers": False,
        "randomness.seed": seed,
        "log_level": "WARNING",  # mmengine's INFO lines would bury the progress bar
    }
    if lr is not None:
        opts["optim_wrapper.optimizer.lr"] = lr
    return opts


def carve_options(fraction: float, data_seed: int) -> dict:
    """``cfg_options``: train on the training part of the carve, validate on its validation
    split (both from DigitMosaic's training images; the test loader is left alone)."""
    carve = {"fraction": float(fraction), "seed": int(data_seed)}
    return {
        "train_dataloader.dataset.carve": dict(carve, part="train"),
        "val_dataloader.dataset.split": "train",
        "val_dataloader.dataset.carve": dict(carve, part="val"),
    }


def val_fraction(settings: dict) -> float:
    return float(settings.get("selection", {}).get("val_fraction", protocol.VAL_FRACTION))


def lr_grid(settings: dict, loss: str) -> dict[str, list[float]]:
    """The lr grid of ``loss`` (``selection.grid`` with ``grid_by_loss[loss]`` over it).

    Only ``lr`` is searched here; another key is an error that names it.
    """
    grid = protocol.grid_for(settings, loss)
    other = sorted(set(grid) - {"lr"})
    if other:
        raise ValueError(
            f"segmentation: selection grid key(s) {other} (loss {loss!r}) cannot be searched; "
            "tasks.segmentation.selection.grid takes only 'lr'"
        )
    if not grid.get("lr"):
        raise ValueError(
            "segmentation: tasks.segmentation.selection.grid needs a non-empty 'lr' list, "
            f"e.g. dict(lr=[0.02, 0.05, 0.1]); got {grid!r}"
        )
    return {"lr": [float(v) for v in grid["lr"]]}


def selection_mode(settings: dict) -> str:
    return settings.get("selection", {}).get("mode", "validation")


@dataclass
class SegRun:
    """One trained model: its Runner, its final validation metrics, and whether it diverged."""

    runner: Any
    val: dict[str, float]
    diverged: bool


def has_diverged(runner) -> bool:
    """True when the last training loss or a weight of the model is not finite."""
    buf = runner.message_hub.log_scalars.get("train/loss")
    if buf is not None and not math.isfinite(float(buf.current())):
        return True
    return not all(bool(torch.isfinite(p).all()) for p in runner.model.parameters())


def loader_test_images(cfg) -> dict:
    """The config's ``test_dataloader`` (the 100 ``val`` images), checked to be uncarved."""
    loader = copy.deepcopy(cfg.test_dataloader)
    ds = loader["dataset"]
    if ds.get("split") != "val" or ds.get("carve") is not None:
        raise RuntimeError(
            "segmentation: test_dataloader must read DigitMosaic's 100 'val' images, uncarved; "
            f"got split={ds.get('split')!r}, carve={ds.get('carve')!r}"
        )
    return loader


def loader_training_part(cfg) -> dict:
    """A test loader over the run's training part (its training dataset, the test pipeline)."""
    loader = copy.deepcopy(cfg.test_dataloader)
    loader["dataset"] = dict(
        copy.deepcopy(cfg.train_dataloader.dataset), pipeline=loader["dataset"]["pipeline"]
    )
    return loader


def train_run(config: Path, work_dir: Path, options: dict, lr: float) -> SegRun:
    """Train ``config`` at ``lr`` with ``options`` (schedule, carve, seed): its :class:`SegRun`."""
    opts = {
        **options,
        "optim_wrapper.optimizer.lr": float(lr),
        # mmengine names a run's MessageHub and logger by config and second, and reuses
        # them for a second run of that name: one unique name per run.
        "experiment_name": f"{DATASET}_{config.stem}_lr{lr:g}_{next(_RUN_IDS)}",
    }
    from hem_plugins.benchmark.mmseg.runner import fit

    runner, val = fit(str(config), str(work_dir), opts)
    return SegRun(runner, val, has_diverged(runner))


def final_metrics(run: SegRun, loss: str) -> dict[str, float]:
    """The kept model's record metrics: IoUMetric on the test images (percent), ``train_acc``
    (IoUMetric's ``FIT_METRIC`` on its training part, as a fraction) and ``diverged``."""
    from hem_plugins.benchmark.mmseg.runner import evaluate

    test = evaluate(run.runner, loader_test_images(run.runner.cfg))
    fit = evaluate(run.runner, loader_training_part(run.runner.cfg))
    missing = [m for m in METRICS if m not in test] + [FIT_METRIC] * (FIT_METRIC not in fit)
    if missing:
        raise RuntimeError(f"segmentation {loss}: IoUMetric returned no {missing}")
    metrics = {m: float(test[m]) for m in METRICS}
    metrics["train_acc"] = float(fit[FIT_METRIC]) / 100.0
    metrics["diverged"] = float(run.diverged)
    return metrics


class SegmentationTask:
    name = "segmentation"
    title = "3e. Semantic segmentation (DigitMosaic, mmseg)"
    claim = (
        "HEM and HEM+ give better semantic segmentation than CE (higher mIoU), HEM+ by "
        "helping the rare classes (higher mean per-class accuracy, mAcc)."
    )

    def units(self, settings: dict) -> int:
        """Trainings per seed: one per grid point (validation mode) or one (tuned) per loss."""
        if selection_mode(settings) == "tuned":
            return len(settings["losses"])
        return sum(
            len(protocol.grid_points(lr_grid(settings, loss))) for loss in settings["losses"]
        )

    def config_for(self, settings: dict, loss: str) -> Path:
        if loss not in CONFIG_SUFFIX:
            raise ValueError(
                f"segmentation: unknown loss {loss!r}; choose from {sorted(CONFIG_SUFFIX)}"
            )
        try:
            return config_path(settings["config"].format(loss=CONFIG_SUFFIX[loss]))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"segmentation config for {loss!r}: {exc}") from None

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if skip_seed(self, settings, seed, ctx):
            return {"records": []}
        return {
            "records": [self.run_loss(settings, loss, seed, ctx) for loss in settings["losses"]]
        }

    def run_loss(self, settings: dict, loss: str, seed: int, ctx: Context) -> dict:
        """Select the lr of ``loss`` on validation, then evaluate the kept model: one record."""
        config = self.config_for(settings, loss)
        iters = int(settings["iters"])
        data_seed, init_seed = protocol.run_seeds(settings, seed)
        base = {
            **schedule_options(iters, init_seed),
            **carve_options(val_fraction(settings), data_seed),
        }
        work_dir = (ctx.work_dir or Path("work_dirs")) / "segmentation" / f"{loss}_{seed}"

        def train_at(params: dict) -> SegRun:
            lr = float(params["lr"])
            ctx.advance(f"{self.name} {loss} lr {lr:g} {iters} it seed {seed}")
            return train_run(config, work_dir / f"lr{lr:g}", base, lr)

        def score(params: dict) -> tuple[float, SegRun]:
            run = train_at(params)
            return (math.nan if run.diverged else run.val.get("mIoU", math.nan)), run

        key = protocol.selection_key(DATASET, loss)
        grid = {} if selection_mode(settings) == "tuned" else lr_grid(settings, loss)
        params, record, run = protocol.select(
            settings, self.name, key, grid, score, SELECTION_METRIC
        )
        if run is None:  # tuned: the lr comes from the tuned file, train once
            run = train_at(params)
        return {
            "group": {"dataset": DATASET, "loss": loss},
            "metrics": final_metrics(run, loss),
            "extra": {
                "iters": iters,
                "config": display_path(config),
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "lr": float(params["lr"]),
                "val_mIoU": run.val.get("mIoU"),
                "train_acc_metric": f"IoUMetric {FIT_METRIC} on the training part",
                "n_train": len(run.runner.train_dataloader.dataset),
                "data_seed": data_seed,
                "init_seed": init_seed,
                "selection": record,
                "lr_selected_on": record["lr_selected_on"],
            },
        }

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = aggregate(result, ("loss",))
        if not agg:
            return []
        losses = [k[0] for k in agg]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        width = 0.38
        for i, metric in enumerate(("mIoU", "mAcc")):
            vals = [np.asarray(agg[(lo,)][metric]) for lo in losses]
            xs = np.arange(len(losses)) + (i - 0.5) * width
            means = [v.mean() for v in vals]
            stds = [v.std() for v in vals]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=metric)
        ax.set_xticks(np.arange(len(losses)), [loss_label(lo) for lo in losses])
        ax.set_ylabel("%")
        ax.set_title("DigitMosaic test images (mmseg IoUMetric)")
        ax.legend(fontsize=8)
        return [save_figure(fig, out_dir, f"{self.name}_digitmosaic.png")]

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = protocol.min_train_acc(s)
        agg = aggregate(result, ("loss",))
        lrs = chosen_lrs(result)
        rows = [
            [loss_label(k[0]), lrs.get(k[0], "—")]
            + [fmt(m.get(x), scale=1.0, digits=2) for x in METRICS]
            + [fmt(m.get("train_acc")), protocol.health_cell(m, min_acc)]
            for k, m in agg.items()
        ]
        lines = []
        for ours, other, metric in CLAIMS:
            a, b = agg.get((ours,)), agg.get((other,))
            if a and b:
                labels = (loss_label(ours), loss_label(other))
                v = protocol.claim_verdict(a, b, metric, labels, min_acc)
                lines.append(
                    f"- {labels[0]} vs {labels[1]}, {metric}: {fmt(a[metric], 1.0, 2)} vs "
                    f"{fmt(b[metric], 1.0, 2)}, {protocol.interval_text(a[metric], b[metric], 1.0)}: "
                    f"**{v}** (claim: {labels[0]} higher)"
                )
        seeds = seeds_to_run({"seeds": result["seeds"], **s})
        parts = [
            f"## {self.title}",
            self.recipe(s, seeds, min_acc),
            md_table(["loss", "lr", "mIoU %", "mAcc %", "aAcc %", "train mAcc %", "healthy"], rows),
            selection_table(result),
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
            per_seed_table(result, ("loss",), METRICS, scale=1.0),
        ]
        parts += [f"![DigitMosaic mIoU and mAcc]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    @staticmethod
    def recipe(s: dict, seeds: list[int], min_acc: float) -> str:
        """The section's paragraph: model, data splits, schedule, selection, health."""
        losses = s.get("losses", [])
        frac = val_fraction(s)
        n_val = int(round(400 * frac))
        sel = s.get("selection", {})
        if selection_mode(s) == "tuned":
            how = f"the lr of each loss is read from `{sel.get('file', 'tuned.py')}`"
        else:
            grid = ", ".join(f"{v:g}" for v in s.get("selection", {}).get("grid", {}).get("lr", []))
            how = f"the lr of each loss is chosen from {{{grid}}} by mIoU on the validation images"
        return (
            "Model: FCN on a ResNetV1c-18 with a quarter of the channels, auxiliary FCN head, BN, "
            "no pretrained weights (`configs/mmseg/_base_/fcn_r18_tiny.py`). Data: DigitMosaic "
            "(64x64, 11 classes, background 88 % of the pixels): per seed, its 400 training "
            f"images are split by the data seed into {400 - n_val} for training and {n_val} for "
            "validation (`DigitMosaicDataset(carve=...)`); the 100 `val` images are the test set "
            f"(the table). SGD, momentum 0.9, wd 5e-4, poly decay (power 0.9) over {s['iters']} "
            f"iterations of batch 8; {how}, and the model trained at that lr is evaluated as it "
            "is. CE+OHEM: mmseg's `OHEMPixelSampler(thresh=0.7, min_kept=800)` on the decode "
            "head; Focal: mmseg's sigmoid `FocalLoss` (gamma 2, alpha 0.5; through `OneHotFocalLoss`, "
            "which gives it one-hot targets, as its CPU path needs). Configs: `"
            + s["config"]
            + "` with "
            + ", ".join(f"`{CONFIG_SUFFIX[x]}`" for x in losses)
            + ". Margins set by `HEMMarginHook` from the training part: HEM `sqrt(2000 / 320) = "
            "2.5`; HEM+ one per class from its pixel frequencies. Health: `train mAcc` is "
            "IoUMetric's mean per-class pixel accuracy on the run's own training images; a run "
            f"below {min_acc:.2f} (or one that diverged) is unhealthy and no verdict is drawn "
            "from it. Seeds "
            + ", ".join(str(x) for x in seeds)
            + " (the data seed picks the validation images, the initialisation seed, "
            "`randomness.seed`, the weights and batch order)."
        )

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        """HEM and HEM+ against CE and against hard-example mining (CE+OHEM), in mIoU."""
        agg = aggregate(result, ("loss",))
        min_acc = protocol.min_train_acc(result["settings"])
        rows = []
        for ours, other in (("hem", "ce"), ("hem_plus", "ce"), ("hem_plus", "ohem")):
            a, b = agg.get((ours,)), agg.get((other,))
            if a and b:
                labels = (loss_label(ours), loss_label(other))
                cell = claim_cell(a, b, "mIoU", labels, min_acc, scale=1.0)
                rows.append((f"3e {labels[0]} segments better than {labels[1]} (mIoU)",
                             {DATASET: cell}))  # fmt: skip
        return rows

    def headline(self, result: dict, dataset: str | None = None) -> dict[str, dict[str, str]]:
        col = {k[0]: fmt(m["mIoU"], 1.0, 1) for k, m in aggregate(result, ("loss",)).items()}
        return {"3e mIoU % (DigitMosaic)": col} if col else {}


def chosen_lrs(result: dict) -> dict[str, str]:
    """``{loss: "0.05"}``, or the lr per seed (``"0.05 / 0.1"``) where the seeds chose differently."""
    by_loss: dict[str, list[float]] = {}
    for _, rec in sorted(records(result), key=lambda sr: sr[0]):
        lr = rec.get("extra", {}).get("lr")
        if lr is not None:
            by_loss.setdefault(rec["group"]["loss"], []).append(float(lr))
    return {
        loss: f"{v[0]:g}" if len(set(v)) == 1 else " / ".join(f"{x:g}" for x in v)
        for loss, v in by_loss.items()
    }


def selection_table(result: dict) -> str:
    """Validation mIoU per lr of the grid (mean over seeds) and how often each lr was chosen."""
    scores: dict[str, dict[float, list[float]]] = {}
    chosen: dict[str, dict[float, int]] = {}
    source = {}
    for _, rec in records(result):
        sel = rec.get("extra", {}).get("selection")
        if not sel:
            continue
        loss = rec["group"]["loss"]
        source[loss] = sel.get("lr_selected_on")
        for params, score, *_ in sel.get("grid", []):
            scores.setdefault(loss, {}).setdefault(float(params["lr"]), []).append(float(score))
        lr = float(sel["chosen"]["lr"])
        chosen.setdefault(loss, {})[lr] = chosen.get(loss, {}).get(lr, 0) + 1
    if not scores:
        return ""
    lrs = sorted({lr for per in scores.values() for lr in per})
    rows = []
    for loss, per in scores.items():
        cells = []
        for lr in lrs:
            cell = fmt(per.get(lr), scale=1.0, digits=1)
            n = chosen.get(loss, {}).get(lr, 0)
            cells.append(f"**{cell}** ({n}x)" if n else cell)
        rows.append([loss_label(loss), *cells, str(source[loss])])
    header = ["loss", *(f"lr {lr:g}" for lr in lrs), "selected on"]
    return (
        "Selection: validation mIoU % per lr of the grid (mean ± std over seeds; bold: chosen, "
        "with how many seeds chose it).\n\n" + md_table(header, rows)
    )


TASK = SegmentationTask()
