"""Adaptive margins: HEM+ with margins that change during training, against HEM+ and logit
adjustment (``docs/adaptive_margins.md``; the paper's open question 1).

Two parts, each on the pipeline and protocol of a paper task:

* **Long-tailed classification** (3c's data and training, :mod:`.classification`): the
  training set of each dataset is made long-tailed at each imbalance ratio, the test set
  stays balanced; the lr of each (dataset, ratio, loss) is chosen by balanced accuracy on a
  validation carve. Metrics: balanced accuracy and worst-class accuracy on the test set.
* **DigitMosaic segmentation** (3e's mmseg pipeline, :mod:`.seg_runs`): the configs
  ``configs/mmseg/fcn-r18tiny_digitmosaic_{hemplus,hemplus_error,hemplus_sched,la}.py``
  trained for ``segmentation.iters`` iterations (lr chosen by validation mIoU). Metrics:
  mIoU and the mean IoU of the rare digits (``segmentation.rare_classes``), per-class IoU
  from mmseg's own ``IoUMetric`` statistics.

Losses: ``hem_plus`` (fixed margins), ``hem_plus_error`` (error-driven rule),
``hem_plus_sched`` (margins grown from 0.1x over the first ``margin_warmup`` of training),
``logit_adjusted`` (Menon et al., tau 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...resources import config_path, display_path
from .. import protocol
from ..config import train_cfg_for
from ..data import Split, long_tailed
from ..losses import loss_label
from ..metrics import classification_metrics
from ..training import predict
from . import seg_runs
from .base import Context, seeds_to_run
from .classification import ClassificationRun, ClassificationTask, Trained
from .sections import aggregate, fmt, md_table, per_seed_table, records, save_figure

#: Benchmark loss name -> suffix of its DigitMosaic config.
SEG_CONFIG = {"hem_plus": "hemplus", "hem_plus_error": "hemplus_error",
              "hem_plus_sched": "hemplus_sched", "logit_adjusted": "la"}  # fmt: skip
ADAPTIVE = ("hem_plus_error", "hem_plus_sched")
#: (ours, theirs): the comparisons with a verdict ("ours higher").
PAIRS = tuple((a, b) for a in ADAPTIVE for b in ("hem_plus", "logit_adjusted"))
SEG_DATASET = seg_runs.DATASET


def verdict_lines(
    by_loss: dict, metrics: tuple[str, ...], min_acc: float, scale: float, prefix: str = ""
) -> list[str]:
    """One Markdown line per pair of :data:`PAIRS` that both ran: each metric's paired
    interval and verdict (healthy runs only, :func:`protocol.claim_verdict`)."""
    lines = []
    for ours, theirs in PAIRS:
        a, b = by_loss.get(ours), by_loss.get(theirs)
        if not (a and b):
            continue
        labels = (loss_label(ours), loss_label(theirs))
        cells = [f"{m.replace('_', ' ')} {protocol.interval_text(a[m], b[m], scale)} "
                 f"**{protocol.claim_verdict(a, b, m, labels, min_acc)}**" for m in metrics]  # fmt: skip
        lines.append(f"- {prefix}{labels[0]} vs {labels[1]}: " + "; ".join(cells))
    return lines


def seg_settings(settings: dict) -> dict:
    """The segmentation part's settings in the form :mod:`.seg_runs` reads."""
    sub = dict(settings.get("segmentation") or {})
    sel = {**settings.get("selection", {}), **sub.pop("selection", {})}
    return {**settings, **sub, "selection": sel}


class AdaptiveMarginsTask(ClassificationTask):
    name = "adaptive_margins"
    title = "Adaptive margins (HEM+ with error-driven or scheduled margins)"
    selection_metric = "balanced_acc"

    # -- running ---------------------------------------------------------------------

    def units(self, settings: dict) -> int:
        cls = len(settings["datasets"]) * len(settings["ratios"]) * len(settings["losses"])
        s = seg_settings(settings)
        if not s.get("losses"):
            return cls
        return cls + seg_runs.grid_units(s, s["losses"])

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        recs = super().run_seed(settings, seed, ctx)["records"]
        s = seg_settings(settings)
        if s.get("losses"):
            if seed in seeds_to_run(s):
                recs += [self.run_segmentation(s, loss, seed, ctx) for loss in s["losses"]]
            else:
                for _ in range(self.units(settings) - len(recs)):
                    ctx.advance(f"{self.name} seed {seed}: segmentation skipped (max_seeds)")
        return {"records": recs}

    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        """The classification part: every loss at every imbalance ratio."""
        train_cfg = train_cfg_for(settings, dataset)
        # hem_plus_sched counts its warm-up in SGD steps of the run
        loss_opts = {**settings.get("loss_options", {}),
                     "margin_warmup": float(settings.get("margin_warmup", 0.5)),
                     "train_epochs": int(train_cfg.get("epochs", 30)),
                     "train_batch_size": int(train_cfg.get("batch_size", 64))}  # fmt: skip
        run_settings = {**settings, "loss_options": loss_opts}
        for ratio in settings["ratios"]:
            split = long_tailed(data, float(ratio), data_seed)
            for loss in settings["losses"]:
                group = {"part": "classification", "dataset": dataset, "ratio": float(ratio),
                         "loss": loss}  # fmt: skip
                key = protocol.selection_key(dataset, f"ratio={ratio:g}", loss)
                yield ClassificationRun(split, loss, key, group, f"{dataset} IR={ratio} {loss}",
                                        run_settings)  # fmt: skip

    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        m = classification_metrics(predict(trained.model, run.split.x_test, ctx.device),
                                   run.split.y_test)  # fmt: skip
        per_class = m.pop("per_class_acc")
        m["worst_acc"] = float(np.min(per_class))
        m.update(trained.health(False))
        extra = {**trained.extra(), "class_counts": trained.part.class_counts(),
                 "per_class_acc": per_class}  # fmt: skip
        return [{"group": run.group, "metrics": m, "extra": extra}]

    def run_segmentation(self, s: dict, loss: str, seed: int, ctx: Context) -> dict:
        """3e's protocol for one loss and seed (:func:`.seg_runs.select_and_train`), with the
        scheduled rule's warm-up set to the run's iterations and per-class IoU."""
        if loss not in SEG_CONFIG:
            raise ValueError(f"{self.name}: no DigitMosaic config for loss {loss!r}")
        config = config_path(s["config"].format(loss=SEG_CONFIG[loss]))
        iters = int(s["iters"])
        data_seed, init_seed = protocol.run_seeds(s, seed)
        keep = ctx.keep_checkpoints
        base = {**seg_runs.recipe_options(s, iters, init_seed, keep_checkpoint=keep),
                **seg_runs.carve_options(protocol.val_fraction(s), data_seed)}  # fmt: skip
        if loss == "hem_plus_sched":
            warmup = max(1, round(float(s.get("margin_warmup", 0.5)) * iters))
            for head in ("decode_head", "auxiliary_head"):
                base[f"model.{head}.loss_decode.margin_rule.warmup_steps"] = warmup
        work_dir = (ctx.work_dir or Path("work_dirs")) / self.name / f"{loss}_{seed}"
        params, record, run = seg_runs.select_and_train(
            s, self.name, loss, config, base, work_dir,
            lambda lr: ctx.advance(f"{self.name} {SEG_DATASET} {loss} lr {lr:g} {iters} it seed {seed}"),
        )  # fmt: skip
        metrics, per_class = seg_metrics(run, loss, [int(c) for c in s["rare_classes"]])
        return {
            "group": {"part": "segmentation", "dataset": SEG_DATASET, "loss": loss},
            "metrics": metrics,
            "extra": {"iters": iters, "config": display_path(config),
                      "lr": float(params["lr"]), "val_mIoU": run.val.get("mIoU"),
                      "per_class_IoU": per_class, "data_seed": data_seed,
                      "init_seed": init_seed, "selection": record,
                      "lr_selected_on": record["lr_selected_on"],
                      **seg_runs.curve_extra(run)},
        }  # fmt: skip

    # -- report ------------------------------------------------------------------------

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        ss = seg_settings(s)
        parts = [f"## {self.title}", self.recipe(s, ss, result["seeds"])]
        parts += self.render_classification(result)
        parts += self.render_segmentation(result)
        parts += [f"![adaptive margins]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    @staticmethod
    def recipe(s: dict, ss: dict, seeds: list) -> str:
        seg_seeds = seeds_to_run({**ss, "seeds": seeds})
        tuned = s.get("selection", {}).get("mode") == "tuned"
        how = "read from the tuned file" if tuned else "chosen on validation carves"
        return (
            "HEM+ with its fixed margins against the two adaptive rules of "
            "`docs/adaptive_margins.md` (error-driven: EMA of each class's training error, "
            "factor clamped to [0.5, 2]; scheduled: margins grown linearly from 0.1x HEM+ over "
            f"the first {float(s.get('margin_warmup', 0.5)):g} of training) and logit-adjusted "
            "CE (tau 1). Classification: 3c's long-tailed training sets (ratios "
            + ", ".join(f"{r:g}" for r in s["ratios"])
            + f"), balanced test sets, {s['train']['epochs']} epochs, lr {how} (balanced "
            "accuracy). Segmentation: 3e's DigitMosaic pipeline at "
            f"{ss.get('iters')} iterations (lr by validation mIoU), seeds "
            + ", ".join(str(x) for x in seg_seeds)
            + "; rare digits: classes "
            + ", ".join(str(c) for c in ss.get("rare_classes", []))
            + " (digits "
            + ", ".join(str(int(c) - 1) for c in ss.get("rare_classes", []))
            + "). Seeds "
            + ", ".join(str(x) for x in seeds)
            + ". Verdicts: paired 95 % t-intervals over seeds, healthy runs only."
        )

    def render_classification(self, result: dict) -> list[str]:
        s = result["settings"]
        min_acc = protocol.min_train_acc(s)
        agg = aggregate(result, ("dataset", "ratio", "loss"),
                        where=lambda g: g.get("part") == "classification")  # fmt: skip
        if not agg:
            return []
        rows = [[ds, f"{r:g}", loss_label(lo), _lrs(result, (ds, r, lo)),
                 protocol.health_cell(m, min_acc), fmt(m["balanced_acc"]), fmt(m["worst_acc"]),
                 fmt(m["train_acc"])]
                for (ds, r, lo), m in agg.items()]  # fmt: skip
        lines = []
        for ds, r in dict.fromkeys((k[0], k[1]) for k in agg):
            lines += verdict_lines({lo: m for (d, q, lo), m in agg.items() if (d, q) == (ds, r)},
                                   ("balanced_acc", "worst_acc"), min_acc, 100.0,
                                   f"{ds} IR={r:g}: ")  # fmt: skip
        return [
            "### Long-tailed classification",
            md_table(
                [
                    "dataset",
                    "imbalance ratio",
                    "loss",
                    "lr",
                    "healthy runs",
                    "balanced acc %",
                    "worst-class acc %",
                    "train acc %",
                ],
                rows,
            ),  # fmt: skip
            protocol_note(min_acc),
            "Verdicts (claim: the adaptive rule is higher):\n\n" + "\n".join(lines),
            per_seed_table(
                {**result, "per_seed": _only(result, "classification")},
                ("dataset", "ratio", "loss"),
                ("train_acc", "balanced_acc", "worst_acc"),
            ),
        ]

    def render_segmentation(self, result: dict) -> list[str]:
        ss = seg_settings(result["settings"])
        min_acc = protocol.min_train_acc(ss)
        agg = aggregate(result, ("loss",), where=lambda g: g.get("part") == "segmentation")
        if not agg:
            return []
        rows = [[loss_label(lo), _lrs(result, (SEG_DATASET, None, lo)),
                 protocol.health_cell(m, min_acc), fmt(m["mIoU"], 1.0, 2),
                 fmt(m["rare_mIoU"], 1.0, 2), fmt(m["mAcc"], 1.0, 2), fmt(m["train_acc"])]
                for (lo,), m in agg.items()]  # fmt: skip
        lines = verdict_lines({lo: m for (lo,), m in agg.items()}, ("mIoU", "rare_mIoU"),
                              min_acc, 1.0)  # fmt: skip
        return [
            "### DigitMosaic segmentation",
            md_table(
                [
                    "loss",
                    "lr",
                    "healthy runs",
                    "mIoU %",
                    "rare-digit mIoU %",
                    "mAcc %",
                    "train mAcc %",
                ],
                rows,
            ),  # fmt: skip
            f"Health: train mAcc (IoUMetric's mean per-class pixel accuracy on the run's own "
            f"training images) >= {min_acc:g} and no divergence.",
            "Verdicts (claim: the adaptive rule is higher):\n\n" + "\n".join(lines),
            per_seed_table(
                {**result, "per_seed": _only(result, "segmentation")},
                ("loss",),
                ("mIoU", "rare_mIoU"),
                scale=1.0,
            ),  # fmt: skip
        ]

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cls = aggregate(result, ("dataset", "ratio", "loss"),
                        where=lambda g: g.get("part") == "classification")  # fmt: skip
        segm = aggregate(result, ("loss",), where=lambda g: g.get("part") == "segmentation")
        panels = []
        for ds in dict.fromkeys(k[0] for k in cls):
            r = max(k[1] for k in cls if k[0] == ds)
            panels.append((f"{ds}, IR={r:g}", {k[2]: v for k, v in cls.items()
                                               if k[0] == ds and k[1] == r},
                           (("balanced_acc", "balanced acc"), ("worst_acc", "worst class")),
                           100.0))  # fmt: skip
        if segm:
            panels.append((f"DigitMosaic ({seg_settings(result['settings'])['iters']} it)",
                           {k[0]: v for k, v in segm.items()},
                           (("mIoU", "mIoU"), ("rare_mIoU", "rare-digit mIoU")), 1.0))  # fmt: skip
        if not panels:
            return []
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (title, by_loss, metrics, scale) in zip(axes[0], panels, strict=True):
            losses = list(by_loss)
            width = 0.8 / len(metrics)
            for i, (metric, label) in enumerate(metrics):
                vals = [scale * np.asarray(by_loss[lo][metric]) for lo in losses]
                xs = np.arange(len(losses)) + (i - (len(metrics) - 1) / 2) * width
                ax.bar(xs, [v.mean() for v in vals], width, yerr=[v.std() for v in vals],
                       capsize=2, label=label)  # fmt: skip
            ax.set_xticks(np.arange(len(losses)), [loss_label(lo) for lo in losses],
                          rotation=20, fontsize=7)  # fmt: skip
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("%")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return [save_figure(fig, out_dir, f"{self.name}.png")]


def protocol_note(min_acc: float) -> str:
    return (
        f"Health: final training accuracy >= {min_acc:g} (3c's threshold for long-tailed "
        "data) and no divergence; unhealthy runs are named and not compared."
    )


def _only(result: dict, part: str) -> dict:
    return {
        seed: {"records": [r for r in per["records"] if r["group"].get("part") == part]}
        for seed, per in result["per_seed"].items()
    }


def _lrs(result: dict, key: tuple) -> str:
    """The chosen lr of one (dataset, ratio, loss) group, per seed where they differ."""
    lrs = [
        float(rec["extra"]["lr"])
        for _, rec in records(result)
        if (rec["group"].get("dataset"), rec["group"].get("ratio"), rec["group"]["loss"]) == key
    ]
    if not lrs:
        return "—"
    return f"{lrs[0]:g}" if len(set(lrs)) == 1 else " / ".join(f"{x:g}" for x in lrs)


def seg_metrics(run: seg_runs.SegRun, loss: str, rare: list[int]) -> tuple[dict, list[float]]:
    """3e's record metrics of the kept model, plus per-class IoU on the test images and the
    mean IoU of the ``rare`` classes (percent; a class absent from prediction and label
    counts as NaN and is left out of the mean, as IoUMetric does)."""
    import torch

    from hem_plugins.benchmark.mmseg.runner import evaluate

    collected: list = []
    evaluator = dict(run.runner.cfg.test_evaluator)
    metric = _per_class_metric(evaluator, collected)
    test = evaluate(run.runner, seg_runs.loader_test_images(run.runner.cfg), [metric])
    fit = evaluate(run.runner, seg_runs.loader_training_part(run.runner.cfg))
    stats = [torch.stack([r[i] for r in collected]).sum(0) for i in range(2)]
    iou = (100.0 * stats[0].double() / stats[1].double()).tolist()  # intersect / union
    metrics = {m: float(test[m]) for m in seg_runs.METRICS}
    rare_iou = [iou[c] for c in rare if not math.isnan(iou[c])]
    metrics["rare_mIoU"] = float(np.mean(rare_iou)) if rare_iou else math.nan
    metrics["train_acc"] = float(fit[seg_runs.FIT_METRIC]) / 100.0
    metrics["diverged"] = float(run.diverged)
    return metrics, [round(v, 3) for v in iou]


def _per_class_metric(evaluator: dict, sink: list):
    """mmseg's ``IoUMetric`` (the config's own settings) that also hands its per-image
    statistics (intersection, union, ...) to ``sink``."""
    from mmseg.evaluation import IoUMetric

    class _Collect(IoUMetric):
        def compute_metrics(self, results):
            sink.extend(results)
            return super().compute_metrics(results)

    kwargs = {k: v for k, v in evaluator.items() if k != "type"}
    return _Collect(**kwargs)


TASK = AdaptiveMarginsTask()
