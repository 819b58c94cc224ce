"""3e. Semantic segmentation through the mmseg plugin: DigitMosaic, CE, CE+OHEM, Focal, Dice,
HEM and HEM+.

Each loss trains its shipped config ``configs/mmseg/fcn-r18tiny_digitmosaic_<loss>.py``
(tiny FCN on a ResNetV1c-18 with a quarter of the channels; the configs differ only in
the loss of both heads, or in mmseg's ``OHEMPixelSampler`` on the decode head; HEM and
HEM+ get their margins from ``HEMMarginHook``) through :mod:`.seg_runs`
(:func:`hem_plugins.benchmark.mmseg.runner.fit`, the work of ``tools/train_seg.py``), with
the profile's iteration count and the poly schedule stretched to it.

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

from pathlib import Path

import numpy as np
import torch

from ...resources import config_path, display_path
from .. import protocol
from ..losses import loss_label
from .base import BaseTask, Context, seeds_to_run
from .sections import aggregate, claim_cell, fmt, md_table, per_seed_table, records, save_figure
from .seg_runs import (
    DATASET,
    FIT_METRIC,
    METRICS,
    carve_options,
    curve_extra,
    final_metrics,
    grid_units,
    recipe_options,
    select_and_train,
    selection_mode,
)

#: Benchmark loss name -> suffix of the DigitMosaic config.
CONFIG_SUFFIX = {"ce": "ce", "ohem": "ohem", "focal": "focal", "dice": "dice", "ce_dice": "ce_dice", "hem": "hem",
                 "hem_plus": "hemplus", "hem_rows": "hem_rows", "hem_floor": "hem_floor",
                 "logit_adjusted": "la"}  # fmt: skip
#: ``(ours, theirs, metric)``: the claims the report draws verdicts for ("ours higher").
CLAIMS = (
    ("hem", "ce", "mIoU"),
    ("hem_plus", "ce", "mIoU"),
    ("hem", "ohem", "mIoU"),
    ("hem_plus", "ohem", "mIoU"),
    ("hem", "focal", "mIoU"),
    ("hem_plus", "focal", "mIoU"),
    ("hem", "ce_dice", "mIoU"),
    ("hem_plus", "ce_dice", "mIoU"),
    ("hem", "logit_adjusted", "mIoU"),
    ("hem_plus", "logit_adjusted", "mIoU"),
    ("hem_plus", "hem", "mAcc"),
)


class SegmentationTask(BaseTask):
    name = "segmentation"
    title = "3e. Semantic segmentation (DigitMosaic, mmseg)"
    claim = (
        "HEM and HEM+ give better semantic segmentation than CE (higher mIoU), HEM+ by "
        "helping the rare classes (higher mean per-class accuracy, mAcc)."
    )

    def units(self, settings: dict) -> int:
        """Trainings per seed: one per grid point (validation mode) or one (tuned) per loss."""
        return grid_units(settings, settings["losses"])

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
        if self.skip_seed(settings, seed, ctx):
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
            **recipe_options(settings, iters, init_seed, keep_checkpoint=ctx.keep_checkpoints),
            **carve_options(protocol.val_fraction(settings), data_seed),
        }
        work_dir = (ctx.work_dir or Path("work_dirs")) / "segmentation" / f"{loss}_{seed}"
        params, record, run = select_and_train(
            settings, self.name, loss, config, base, work_dir,
            lambda lr: ctx.advance(f"{self.name} {loss} lr {lr:g} {iters} it seed {seed}"),
        )  # fmt: skip
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
                **curve_extra(run),
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
        out = [save_figure(fig, out_dir, f"{self.name}_digitmosaic.png")]
        curves = self.plot_curves(result, out_dir)
        return out + ([curves] if curves else [])

    def plot_curves(self, result: dict, out_dir: Path) -> str | None:
        """Training curves: validation mIoU at each validation of the run and the training
        loss (relative to its first window: the losses have different scales), mean over
        seeds per loss."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        val, loss = mean_curves(result)
        if not val:
            return None
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for name, (xs, ys) in val.items():
            axes[0].plot(xs, ys, marker="o", ms=3, label=loss_label(name))
        for name, (xs, ys) in loss.items():
            axes[1].plot(xs, np.asarray(ys) / ys[0], label=loss_label(name))
        axes[0].set(xlabel="iteration", ylabel="validation mIoU %",
                    title="mIoU on the validation images during training")  # fmt: skip
        axes[1].set(xlabel="iteration", ylabel="loss / loss of the first window",
                    title="training loss (both heads)", yscale="log")  # fmt: skip
        axes[0].legend(fontsize=7)
        return save_figure(fig, out_dir, f"{self.name}_curves.png")

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
            plateau_text(result),
        ]
        parts += [f"![DigitMosaic mIoU and mAcc, training curves]({f})"
                  for f in self.plot(result, out_dir)]  # fmt: skip
        return "\n\n".join(p for p in parts if p)

    @staticmethod
    def recipe(s: dict, seeds: list[int], min_acc: float) -> str:
        """The section's paragraph: model, data splits, schedule, selection, health."""
        losses = s.get("losses", [])
        frac = protocol.val_fraction(s)
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
            f"(the table). {optimizer_text(s)}, poly decay (power 0.9) over {s['iters']} "
            f"iterations of batch {s.get('batch_size') or 8}; {how}, and the model trained at that lr is evaluated as it "
            "is. Logit adjustment: the log class priors (pixel frequencies) added to the logits "
            "in training (`LogitAdjustedLoss`, `LogitAdjustHook`). CE+OHEM: mmseg's `OHEMPixelSampler(thresh=0.7, min_kept=800)` on the decode "
            "head; CE+Dice: mmseg's CE (weight 1) plus `DiceLoss` (weight 3) on each head, "
            "the weights of mmseg's own CE+Dice configs (Dice alone does not reach the health "
            "threshold in this budget); Focal: mmseg's sigmoid `FocalLoss` (gamma 2, alpha 0.5; through `OneHotFocalLoss`, "
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
        """HEM and HEM+ against CE, HEM+ against the other baselines (hard-example mining,
        Focal, CE+Dice, logit adjustment), in mIoU."""
        agg = aggregate(result, ("loss",))
        min_acc = protocol.min_train_acc(result["settings"])
        rows = []
        pairs = (("hem", "ce"), ("hem_plus", "ce"), ("hem_plus", "ohem"), ("hem_plus", "focal"),
                 ("hem_plus", "ce_dice"), ("hem_plus", "logit_adjusted"))  # fmt: skip
        for ours, other in pairs:
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


def optimizer_text(settings: dict) -> str:
    """The optimiser of the runs: the settings' ``optimizer`` or the configs' SGD."""
    opt = settings.get("optimizer")
    if not opt:
        return "SGD (the configs'), momentum 0.9, wd 5e-4"
    rest = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in opt.items() if k not in ("type", "lr"))  # fmt: skip
    return f"{opt['type']} (replacing the configs' SGD)" + (f", {rest}" if rest else "")


def mean_curves(result: dict) -> tuple[dict, dict]:
    """``({loss: (iterations, mean validation mIoU)}, {loss: (iterations, mean loss)})`` over
    the seeds whose curves share the iterations (records without curves are skipped)."""
    val: dict[str, list] = {}
    loss: dict[str, list] = {}
    for _, rec in records(result):
        extra, name = rec.get("extra", {}), rec["group"]["loss"]
        if extra.get("val_curve"):
            val.setdefault(name, []).append(
                ([p["iter"] for p in extra["val_curve"]], [p["mIoU"] for p in extra["val_curve"]])
            )
        if extra.get("loss_curve"):
            loss.setdefault(name, []).append(
                ([p[0] for p in extra["loss_curve"]], [p[1] for p in extra["loss_curve"]])
            )

    def mean(runs: list) -> tuple[list, list] | None:
        xs = runs[0][0]
        same = [ys for x, ys in runs if x == xs and all(v is not None for v in ys)]
        return (xs, list(np.mean(np.asarray(same, dtype=float), axis=0))) if same else None

    return (
        {k: m for k, v in val.items() if (m := mean(v))},
        {k: m for k, v in loss.items() if (m := mean(v))},
    )


def plateau_text(result: dict) -> str:
    """Per loss, the validation mIoU gained over the last fifth of the training and over the
    run (means over seeds, from the recorded curves): how close each run came to a plateau."""
    val, _ = mean_curves(result)
    cells = []
    for name, (xs, ys) in val.items():
        if len(xs) < 2:
            continue
        last = xs[-1]
        i = min(range(len(xs)), key=lambda j: abs(xs[j] - 0.8 * last))
        cells.append(
            f"{loss_label(name)} {ys[-1] - ys[i]:+.1f} over iterations {xs[i]}-{last} "
            f"({ys[-1] - ys[0]:+.1f} since iteration {xs[0]})"
        )
    if not cells:
        return ""
    return (
        "**Plateau.** Validation mIoU gained in the last part of the training (mean over "
        "seeds; the curves are in the plot below): " + "; ".join(cells) + "."
    )


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
