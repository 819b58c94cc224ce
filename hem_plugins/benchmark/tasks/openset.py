"""3a. Clean accuracy, unknown-class rejection and calibration.

Train on the known classes (default: 0-5), hold the others out as unknowns;
AUROC and FPR at 95 % TPR with MSP and max-logit scores, accuracy, ECE and NLL
on the known test classes; MSP histograms known vs unknown (the paper's Fig. 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..losses import loss_label
from ..protocol import claim_verdict, health_cell, interval_text, min_train_acc
from .open_set_runs import HIST_BINS, OpenSetClassification
from .sections import (
    DIAGNOSTICS_NOTE,
    SATURATED_GAP,
    aggregate,
    claim_cell,
    diagnostics_cells,
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


class OpenSetTask(OpenSetClassification):
    name = "openset"
    title = "3a. Clean accuracy, unknown-class rejection, calibration"
    claim = (
        "HEM rejects unknown classes better than CE (higher AUROC with MSP and with max-logit "
        "scores), at a small cost in clean accuracy (paper, Sec. 4 and Fig. 4)."
    )

    def _claims(self, agg: dict, min_acc: float, ours: str = "hem", base: str = "ce") -> list[str]:
        lines = []
        for ds in dict.fromkeys(k[0] for k in agg):
            a, b = agg.get((ds, ours)), agg.get((ds, base))
            if not a or not b:
                continue
            labels = (loss_label(ours), loss_label(base))
            for key, label, hib in (
                ("auroc_msp", "AUROC (MSP) higher", True),
                ("auroc_mls", "AUROC (max-logit) higher", True),
                ("fpr95_msp", "FPR@95TPR (MSP) lower", False),
            ):
                v = claim_verdict(a, b, key, labels, min_acc, hib)
                lines.append(
                    f"- {ds}: paper: {labels[0]} {label} than {labels[1]} — measured "
                    f"{fmt(a[key])} vs {fmt(b[key])}, paired {interval_text(a[key], b[key])}: "
                    f"**{v}**"
                )
            v = claim_verdict(a, b, "acc", labels, min_acc, tolerance=0.02)
            lines.append(
                f"- {ds}: paper: a small cost in clean accuracy against {labels[1]} — "
                f"measured {fmt(a['acc'])} vs {fmt(b['acc'])}, paired "
                f"{interval_text(a['acc'], b['acc'])}: **{v}** (read here as: the interval of "
                "the difference lies above -2 points)"
            )
            lines.append(
                f"- {ds}: calibration (ECE of softmax on the known classes) {fmt(a['ece'])} vs "
                f"{fmt(b['ece'])}: the paper makes no calibration claim we compare against; "
                "reported for information."
            )
        return lines

    def _margin_sensitivity(self, result: dict) -> str:
        """HEM at the profile's margin scale and at each ``margin_scales`` entry."""
        scales = result["settings"].get("margin_scales") or []
        if not scales:
            return ""
        min_acc = min_train_acc(result["settings"])
        default = float(result["settings"].get("loss_options", {}).get("margin_scale", 2000.0))
        agg = aggregate(
            result, ("dataset", "margin_scale"),
            where=lambda g: g["loss"] == "hem",
        )  # fmt: skip
        rows = []
        for (ds, sc), m in agg.items():
            scale = default if sc is None else sc
            rows.append([ds, f"{scale:g} (x{scale / default:g})", health_cell(m, min_acc),
                         fmt(m["acc"]), fmt(m["auroc_msp"]), fmt(m["auroc_mls"]),
                         *diagnostics_cells(m)])  # fmt: skip
        rows.sort(key=lambda r: (r[0], float(r[1].split()[0])))
        return "\n\n".join([
            "### Margin sensitivity (HEM)",
            "HEM with the margin scale of `margin_for_dataset(n_train, scale)` at x0.25, x1 "
            "and x4 of the default (the margin itself moves by the square root: x0.5 and x2), "
            "every scale at the lr chosen for HEM at the default scale (same seed, or the tuned "
            "file's), so that only the margin varies.",
            md_table(["dataset", "margin scale", "healthy runs", "acc %", "AUROC MSP %",
                      "AUROC MLS %", "kept %", "gap / margin"], rows),
        ])  # fmt: skip

    def plot(self, result: dict, out_dir: Path, losses=("ce", "hem")) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sums: dict[tuple, dict[str, np.ndarray]] = {}
        for _, rec in records(result):
            g, e = rec["group"], rec.get("extra", {})
            if g["loss"] not in losses or "msp_hist_known" not in e:
                continue
            slot = sums.setdefault((g["dataset"], g["loss"]), {})
            for part in ("known", "unknown"):
                h = np.asarray(e[f"msp_hist_{part}"], dtype=float)
                slot[part] = slot.get(part, 0) + h
        files = []
        edges = np.linspace(0, 1, HIST_BINS + 1)
        for ds in dict.fromkeys(k[0] for k in sums):
            present = [x for x in losses if (ds, x) in sums]
            fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), sharey=True,
                                     squeeze=False)  # fmt: skip
            for ax, loss in zip(axes[0], present, strict=True):
                for part, color in (("known", "tab:blue"), ("unknown", "tab:red")):
                    h = sums[(ds, loss)][part]
                    ax.stairs(h / max(h.sum(), 1), edges, fill=True, alpha=0.5, color=color,
                              label=f"{part} classes")  # fmt: skip
                ax.set_title(f"{loss_label(loss)} ({ds})")
                ax.set_xlabel("max softmax probability")
            axes[0][0].set_ylabel("fraction of test samples")
            axes[0][0].legend(loc="upper left")
            files.append(save_figure(fig, out_dir, f"{self.name}_msp_hist_{ds}.png"))
        return files

    def plot_diagnostics(self, result: dict, out_dir: Path) -> list[str]:
        """Kept fraction and gap over margin per epoch, one line per seed and margin loss."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        curves: dict[str, dict[str, list]] = {}
        for _, rec in records(result):
            g, e = rec["group"], rec.get("extra", {})
            if not self.main_run(g) or not e.get("kept_fraction_curve"):
                continue
            curves.setdefault(g["dataset"], {}).setdefault(g["loss"], []).append(e)
        if not curves:
            return []
        colors = dict(zip(("mm", "hem_nothr", "hem", "hem_plus"),
                          ("tab:gray", "tab:orange", "tab:blue", "tab:green"), strict=True))  # fmt: skip
        fig, axes = plt.subplots(2, len(curves), figsize=(4.6 * len(curves), 5.4), squeeze=False)
        for col, (ds, by_loss) in enumerate(curves.items()):
            for loss, runs in by_loss.items():
                for i, e in enumerate(runs):
                    label = loss_label(loss) if i == 0 else None
                    kf = 100 * np.asarray(e["kept_fraction_curve"])
                    axes[0][col].plot(np.arange(1, len(kf) + 1), kf, color=colors.get(loss),
                                      lw=0.9, alpha=0.8, label=label)  # fmt: skip
                    gap = np.asarray(e.get("gap_over_margin_curve") or [], dtype=float)
                    axes[1][col].plot(np.arange(1, len(gap) + 1), gap, color=colors.get(loss),
                                      lw=0.9, alpha=0.8, label=label)  # fmt: skip
            axes[0][col].set_title(f"{ds}")
            axes[0][col].set_yscale("log")
            axes[0][col].set_ylabel("kept entries % (|K| / |V|C)")
            axes[1][col].axhline(SATURATED_GAP, color="tab:red", ls=":", lw=1)
            axes[1][col].set_ylabel("known test gap / margin")
            axes[1][col].set_xlabel("epoch")
            axes[0][col].legend(fontsize=7)
        fig.suptitle("Margin losses over training (one line per seed)", fontsize=10)
        return [save_figure(fig, out_dir, f"{self.name}_diagnostics.png")]

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        table, agg = self.results_table(result)
        min_acc = min_train_acc(s)
        parts = [
            f"## {self.title}",
            f"Known classes {s.get('known_classes') or 'first 60 %'}; the rest are unknowns at "
            "test time. Mean ± std over seeds " + ", ".join(str(x) for x in result["seeds"]) + ".",
            train_settings_table(s, s["losses"]),
            selection_table(result, ("dataset", "loss", "margin_scale")),
            margins_table(result),
            table,
            health_note(min_acc),
            DIAGNOSTICS_NOTE,
            per_seed_table(
                result,
                ("dataset", "loss", "margin_scale"),
                ("train_acc", "acc", "auroc_msp", "auroc_mls"),
            ),  # fmt: skip
            f"**Paper's claim.** {self.claim}",
            "\n".join(self._claims(agg, min_acc)),
            self._margin_sensitivity(result),
        ]
        for f in self.plot(result, out_dir):
            parts.append(f"![MSP histograms, known vs unknown]({f})")
        for f in self.plot_diagnostics(result, out_dir):
            parts.append(f"![kept fraction and gap over margin per epoch]({f})")
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        """``[(claim, {dataset: cell})]`` for the README's table of the paper's claims."""
        agg = aggregate(result, ("dataset", "loss"), where=self.main_run)
        min_acc = min_train_acc(result["settings"])
        rows: list[tuple[str, dict[str, str]]] = [
            ("3a HEM rejects unknowns better than CE (AUROC, MSP)", {}),
            ("3a HEM rejects unknowns better than CE (AUROC, max logit)", {}),
            ("3a HEM costs little clean accuracy (at most 2 points below CE)", {}),
        ]
        for ds in dict.fromkeys(k[0] for k in agg):
            a, b = agg.get((ds, "hem")), agg.get((ds, "ce"))
            labels = ("HEM", "CE")
            rows[0][1][ds] = claim_cell(a, b, "auroc_msp", labels, min_acc)
            rows[1][1][ds] = claim_cell(a, b, "auroc_mls", labels, min_acc)
            rows[2][1][ds] = claim_cell(a, b, "acc", labels, min_acc, tolerance=0.02)
        return rows

    def headline(self, result: dict, dataset: str) -> dict[str, dict[str, str]]:
        agg = aggregate(result, ("dataset", "loss"), where=self.main_run)
        min_acc = min_train_acc(result["settings"])
        cols: dict[str, dict[str, str]] = {"3a clean acc %": {}, "3a AUROC MSP %": {}}
        for (ds, loss), m in agg.items():
            if ds == dataset:
                cols["3a clean acc %"][loss] = health_fmt(m, "acc", min_acc)
                cols["3a AUROC MSP %"][loss] = health_fmt(m, "auroc_msp", min_acc)
        return cols


TASK = OpenSetTask()
