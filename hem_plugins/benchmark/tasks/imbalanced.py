"""3c. Imbalanced data: long-tailed training sets at several imbalance ratios.

Class ``c`` keeps ``n_max * ratio ** (-c / (C - 1))`` training samples; the test
set stays balanced. Balanced accuracy (mean per-class recall, torchmetrics'
macro accuracy) and per-class accuracy. HEM+ gets the training set's class
counts; logit-adjusted loss its class priors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data import Split, long_tailed
from ..losses import MARGIN_LOSSES, loss_label
from ..metrics import classification_metrics
from ..protocol import (
    claim_verdict,
    health_cell,
    interval_text,
    min_train_acc,
    selection_key,
)
from ..training import predict
from .base import Context
from .classification import ClassificationRun, ClassificationTask, Trained
from .sections import (
    aggregate,
    claim_cell,
    fmt,
    health_fmt,
    health_note,
    margins_table,
    md_table,
    per_seed_table,
    records,
    save_figure,
    selection_table,
    train_settings_table,
)


class ImbalancedTask(ClassificationTask):
    name = "imbalanced"
    title = "3c. Imbalanced data (long-tailed training set)"
    claim = (
        "HEM+ learns better than CE from imbalanced data (higher balanced accuracy) and is "
        "competitive with logit adjustment, a loss designed for long-tailed data."
    )
    #: Chosen by balanced accuracy on a (long-tailed) validation carve.
    selection_metric = "balanced_acc"

    def units(self, settings: dict) -> int:
        return len(settings["datasets"]) * len(settings["ratios"]) * len(settings["losses"])

    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        for ratio in settings["ratios"]:
            split = long_tailed(data, float(ratio), data_seed)
            for loss in settings["losses"]:
                group = {"dataset": dataset, "ratio": float(ratio), "loss": loss}
                key = selection_key(dataset, f"ratio={ratio:g}", loss)
                yield ClassificationRun(split, loss, key, group, f"{dataset} IR={ratio} {loss}",
                                        settings)  # fmt: skip

    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        m = classification_metrics(predict(trained.model, run.split.x_test, ctx.device),
                                   run.split.y_test)  # fmt: skip
        per_class = m.pop("per_class_acc")
        half = len(per_class) // 2
        m["tail_acc"] = float(np.mean(per_class[half:]))  # the rarer half
        m.update(trained.health(run.loss in MARGIN_LOSSES))
        extra = {**trained.extra(), "class_counts": trained.part.class_counts(),
                 "per_class_acc": per_class}  # fmt: skip
        return [{"group": run.group, "metrics": m, "extra": extra}]

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        per: dict[tuple, list[list[float]]] = {}
        for _, rec in records(result):
            g = rec["group"]
            per.setdefault((g["dataset"], g["ratio"], g["loss"]), []).append(
                rec["extra"]["per_class_acc"]
            )
        files = []
        for ds in dict.fromkeys(k[0] for k in per):
            ratio = max(k[1] for k in per if k[0] == ds)
            losses = [k[2] for k in per if k[0] == ds and k[1] == ratio]
            fig, ax = plt.subplots(figsize=(8, 3.4))
            width = 0.8 / max(len(losses), 1)
            for i, loss in enumerate(losses):
                a = 100 * np.asarray(per[(ds, ratio, loss)])
                xs = np.arange(a.shape[1]) + i * width
                ax.bar(xs, a.mean(0), width, yerr=a.std(0), capsize=2, label=loss_label(loss))
            ax.set_xlabel("class (0 = most frequent in training)")
            ax.set_ylabel("test accuracy %")
            ax.set_title(f"per-class accuracy, {ds}, imbalance ratio {ratio:g}")
            ax.legend(fontsize=8)
            files.append(save_figure(fig, out_dir, f"{self.name}_per_class_{ds}.png"))
        return files

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = min_train_acc(s)
        agg = aggregate(result, ("dataset", "ratio", "loss"))
        rows = [
            [
                ds,
                f"{r:g}",
                loss_label(lo),
                health_cell(m, min_acc),
                fmt(m["balanced_acc"]),
                fmt(m["tail_acc"]),
                fmt(m["ece"]),
            ]
            for (ds, r, lo), m in agg.items()
        ]
        table = md_table(["dataset", "imbalance ratio", "loss", "healthy runs", "balanced acc %",
                          "acc % on the rarer half", "ECE %"], rows)  # fmt: skip
        lines = []
        for ds, r in dict.fromkeys((k[0], k[1]) for k in agg):
            hp = agg.get((ds, r, "hem_plus"))
            for other, claim in (
                ("ce", "higher"),
                ("hem", "higher"),
                ("logit_adjusted", "competitive"),
            ):
                o = agg.get((ds, r, other))
                if hp and o:
                    tol = 0.02 if claim == "competitive" else 0.0  # within 2 points
                    v = claim_verdict(hp, o, "balanced_acc", ("HEM+", loss_label(other)), min_acc,
                                      tolerance=tol)  # fmt: skip
                    lines.append(
                        f"- {ds} IR={r:g}: HEM+ vs {loss_label(other)} balanced acc "
                        f"{fmt(hp['balanced_acc'])} vs {fmt(o['balanced_acc'])}, paired "
                        f"{interval_text(hp['balanced_acc'], o['balanced_acc'])}: **{v}** "
                        f"(claim: HEM+ {claim}{' (within 2 points)' if tol else ''})"
                    )
        parts = [
            f"## {self.title}",
            "Long-tailed training sets (exponential profile), balanced test sets. Seeds "
            + ", ".join(str(x) for x in result["seeds"])
            + ".",
            train_settings_table(s, s["losses"]),
            selection_table(result, ("dataset", "ratio", "loss")),
            margins_table(result),
            table,
            health_note(min_acc)
            + f" Here the training data are long-tailed, so the threshold is {100 * min_acc:g} %.",
            per_seed_table(result, ("dataset", "ratio", "loss"), ("train_acc", "balanced_acc")),
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
        ]
        parts += [f"![per-class accuracy]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        agg = aggregate(result, ("dataset", "ratio", "loss"))
        if not agg:
            return []
        r = max(k[1] for k in agg)
        min_acc = min_train_acc(result["settings"])
        rows: list[tuple[str, dict[str, str]]] = [
            (f"3c HEM+ beats CE on long-tailed data (balanced acc, IR={r:g})", {}),
            (f"3c HEM+ is competitive with logit adjustment (within 2 points, IR={r:g})", {}),
        ]
        for ds in dict.fromkeys(k[0] for k in agg):
            hp = agg.get((ds, r, "hem_plus"))
            rows[0][1][ds] = claim_cell(hp, agg.get((ds, r, "ce")), "balanced_acc",
                                        ("HEM+", "CE"), min_acc)  # fmt: skip
            rows[1][1][ds] = claim_cell(hp, agg.get((ds, r, "logit_adjusted")), "balanced_acc",
                                        ("HEM+", "Logit-adjusted"), min_acc, tolerance=0.02)  # fmt: skip
        return rows

    def headline(self, result: dict, dataset: str) -> dict[str, dict[str, str]]:
        agg = aggregate(result, ("dataset", "ratio", "loss"))
        ratios = [k[1] for k in agg if k[0] == dataset]
        if not ratios:
            return {}
        r = max(ratios)
        min_acc = min_train_acc(result["settings"])
        col = {
            k[2]: health_fmt(v, "balanced_acc", min_acc)
            for k, v in agg.items()
            if k[0] == dataset and k[1] == r
        }
        return {f"3c balanced acc % (IR={r:g})": col}


TASK = ImbalancedTask()
