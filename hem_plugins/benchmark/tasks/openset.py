"""3a. Clean accuracy, unknown-class rejection and calibration.

Train on the known classes (default: 0-5), hold the others out as unknowns;
AUROC and FPR at 95 % TPR with MSP and max-logit scores, accuracy, ECE and NLL
on the known test classes; MSP histograms known vs unknown (the paper's Fig. 4).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..losses import loss_label
from ..protocol import (
    claim_verdict,
    health_cell,
    interval_text,
    min_train_acc,
    paired_interval,
    unhealthy,
)
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
    mean_std,
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
            explained_section(result),
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


# ---- what the recorded numbers support (issue 18.5) ----------------------------------------
#: The gap the section correlates with AUROC: known test samples, in HEM's default margins.
GAP_KEY = "gap_hem_margins_known"
#: Significance level of the Spearman correlations the section's sentences branch on.
ALPHA = 0.05


#: Up to this many runs the p-value of a rank correlation is exact (every permutation).
EXACT_P_RUNS = 8


def spearman(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    """``(rho, p, n)``: Spearman's rank correlation of the finite pairs (scipy's
    ``spearmanr``) and its two-sided p-value, exact over every permutation up to
    :data:`EXACT_P_RUNS` pairs (scipy's t approximation calls rho = 1 of 3 runs p = 0),
    scipy's above; rho and p NaN with fewer than 3 pairs or a constant side."""
    import itertools

    from scipy.stats import rankdata, spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys, strict=True)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]  # fmt: skip
    n = len(pairs)
    if n < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return float("nan"), float("nan"), n
    res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    rho, pval = float(res.statistic), float(res.pvalue)
    if n <= EXACT_P_RUNS:
        rx, ry = rankdata([p[0] for p in pairs]), rankdata([p[1] for p in pairs])
        perms = np.array(list(itertools.permutations(ry)))
        cx, cp = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
        r = cp @ cx / np.sqrt((cp**2).sum(axis=1) * (cx**2).sum())
        pval = float(np.mean(np.abs(r) >= abs(rho) - 1e-9))
    return rho, pval, n


def rho_cell(rho: float, p: float, n: int) -> str:
    return "—" if math.isnan(rho) else f"{rho:+.2f} (p {p:.2g}, n {n})"


def relation_sentence(what: str, x_name: str, rho: float, p: float, n: int,
                      y_name: str = "AUROC") -> str:  # fmt: skip
    """One sentence on how ``y_name`` goes with ``x_name`` over ``what``'s runs, chosen by
    the sign and significance (:data:`ALPHA`) of Spearman's ``rho``."""
    runs = f"{n} run" + ("s" if n != 1 else "")
    stats = f"Spearman ρ = {rho:+.2f}, p = {p:.2g}, {runs}" if not math.isnan(rho) else ""
    if math.isnan(rho):
        return (f"{what}: no rank correlation between {x_name} and {y_name} is defined "
                f"({runs} with both values, or one of them constant).")  # fmt: skip
    if p < ALPHA and rho < 0:
        return (f"{what}: runs with a larger {x_name} have a **lower** {y_name} ({stats}), the "
                "direction saturation predicts.")  # fmt: skip
    if p < ALPHA and rho > 0:
        return (f"{what}: runs with a larger {x_name} have a **higher** {y_name} ({stats}), the "
                "opposite of what saturation predicts.")  # fmt: skip
    return (f"{what}: no monotone relation between {x_name} and {y_name} is measured ({stats}; "
            f"p ≥ {ALPHA:g}): these runs neither support nor refute it.")  # fmt: skip


def saturation_verdict(pooled: tuple[float, float], within: dict[str, tuple[float, float]]) -> str:
    """Whether the runs support "a large gap lowers AUROC": the correlation pooled over the
    losses (``(rho, p)``) and each loss's own over its seeds (``within[label]``). A pooled
    correlation also carries the losses' differences, so a loss whose own runs go the
    other way makes the answer *mixed*."""
    sig = lambda r: not math.isnan(r[0]) and r[1] < ALPHA  # noqa: E731
    lower = [x for x, r in within.items() if sig(r) and r[0] < 0]
    higher = [x for x, r in within.items() if sig(r) and r[0] > 0]
    if sig(pooled) and pooled[0] > 0:
        return "**contradicted** by the runs: pooled, a larger gap goes with a higher AUROC"
    if sig(pooled) and higher:
        return (f"**mixed**: pooled, a larger gap goes with a lower AUROC, but within "
                f"{', '.join(higher)} a larger gap goes with a higher one, so the pooled "
                "relation is the losses' difference rather than the gap's")  # fmt: skip
    if sig(pooled):
        tail = (f", and so it does within {', '.join(lower)}" if lower else
                "; within each loss no relation is measured, so the pooled one may be the "
                "losses' difference rather than the gap's")  # fmt: skip
        return f"**supported** by the runs: pooled, a larger gap goes with a lower AUROC{tail}"
    tail = f" (within {', '.join(lower)} it does)" if lower else ""
    return ("**not supported**: pooled over the losses' runs, a larger gap does not "
            f"measurably go with a lower AUROC{tail}")  # fmt: skip


def _runs(result: dict) -> tuple[list[tuple[dict, dict, dict]], dict[str, int]]:
    """``(group, metrics, extra)`` of every healthy record holding the logit statistics, and
    per dataset the number of unhealthy ones left out (:func:`..protocol.unhealthy`)."""
    min_acc = min_train_acc(result["settings"])
    runs, left_out = [], {}
    for _, rec in records(result):
        g, m = rec["group"], rec["metrics"]
        if GAP_KEY not in m:
            continue
        if unhealthy(m, min_acc):
            left_out[g["dataset"]] = left_out.get(g["dataset"], 0) + 1
            continue
        runs.append((g, m, rec.get("extra", {})))
    return runs, left_out


def _mean(vals: list[float], scale: float = 1.0, digits: int = 2) -> str:
    return fmt([v for v in vals if v is not None], scale, digits)


def explained_section(result: dict) -> str:
    """3a's reading of its own numbers: per loss the gap and kept share next to AUROC
    (MSP and max-logit), the Spearman correlations over runs of gap and AUROC (per loss
    and pooled), HEM's margin sweep at one lr, and sentences that branch on those values."""
    runs, left_out = _runs(result)
    head = "### What the numbers support: gap, kept share and AUROC"
    if not runs and left_out:
        return f"{head}\n\nNo healthy run holds the logit statistics: nothing to read."
    if not runs:
        return (f"{head}\n\nThese records hold no logit statistics (`{GAP_KEY}`, `kept_hem_*`): "
                "they predate them; rerun 3a to fill this section.")  # fmt: skip
    parts = [head, (
        "Rendered from the records; no number here is typed by hand. *gap*: the mean top-1 "
        "minus top-2 logit over **all** test samples, in units of **HEM's default margin** "
        "for the dataset (`extra.hem_margin`, the same unit for every loss, CE and LogitNorm "
        "included; `gap_hem_margins_*`); *kept*: the share of the (sample, class) entries "
        "that HEM's threshold would keep at that margin, its mean error taken over the whole "
        "test set (`kept_hem_*`; an unknown sample's predicted class stands in as its "
        "target). *ρ*: Spearman's rank correlation over runs (seeds) between the known "
        "samples' gap and the AUROC, per loss and pooled over the losses of the dataset; "
        f"sentences call a correlation measured when p < {ALPHA:g} (p exact over every "
        f"permutation up to {EXACT_P_RUNS} runs). Unhealthy runs are left out"
        + (": " + ", ".join(f"{k} of {ds}" for ds, k in left_out.items()) if left_out else
           " (there are none)") + "."
    )]  # fmt: skip
    datasets = list(dict.fromkeys(g["dataset"] for g, _, _ in runs))
    header = ["dataset", "loss", "runs", "AUROC MSP %", "AUROC MLS %", "gap known",
              "gap unknown", "kept known %", "kept unknown %", "ρ(gap, AUROC MSP)",
              "ρ(gap, AUROC MLS)"]  # fmt: skip
    rows, text = [], []
    for ds in datasets:
        main = [(g, m) for g, m, _ in runs if g["dataset"] == ds and "margin_scale" not in g]
        losses = list(dict.fromkeys(g["loss"] for g, _ in main))
        by_loss = {x: [m for g, m in main if g["loss"] == x] for x in losses}

        stats = {}
        for x in losses:
            cells, stats[x] = _stats_row(ds, loss_label(x), by_loss[x])
            rows.append(cells)
        cells, pooled = _stats_row(ds, "all losses (pooled)", [m for _, m in main])
        rows.append(cells)
        text += _dataset_sentences(ds, stats, pooled, by_loss)
    parts += [md_table(header, rows), "\n".join(text)]
    sweep = _sweep_part(runs, result)
    if sweep:
        parts.append(sweep)
    return "\n\n".join(parts)


def _stats_row(ds: str, label: str, ms: list[dict]) -> tuple[list[str], dict]:
    """A row of the section's table and its correlations ``{msp, mls: (rho, p, n), col}``."""
    col = {k: [m.get(k) for m in ms] for k in ("auroc_msp", "auroc_mls", GAP_KEY,
           "gap_hem_margins_unknown", "kept_hem_known", "kept_hem_unknown")}  # fmt: skip
    r_msp = spearman(col[GAP_KEY], col["auroc_msp"])
    r_mls = spearman(col[GAP_KEY], col["auroc_mls"])
    cells = [ds, label, str(len(ms)), _mean(col["auroc_msp"], 100, 1),
             _mean(col["auroc_mls"], 100, 1), _mean(col[GAP_KEY]),
             _mean(col["gap_hem_margins_unknown"]), _mean(col["kept_hem_known"], 100, 3),
             _mean(col["kept_hem_unknown"], 100, 3), rho_cell(*r_msp),
             rho_cell(*r_mls)]  # fmt: skip
    return cells, {"msp": r_msp, "mls": r_mls, "col": col}


def _dataset_sentences(ds: str, stats: dict, pooled: dict, by_loss: dict) -> list[str]:
    lines = [f"- {ds}: " + relation_sentence("pooled over the losses", "known gap",
                                             *pooled["msp"], y_name="MSP AUROC")]  # fmt: skip
    lines.append(f"- {ds}: " + relation_sentence("pooled over the losses", "known gap",
                                                 *pooled["mls"], y_name="max-logit AUROC"))  # fmt: skip
    if "hem" in stats:
        lines.append(f"- {ds}: " + relation_sentence("HEM over its seeds", "known gap",
                                                     *stats["hem"]["msp"], y_name="MSP AUROC"))  # fmt: skip
        means = {x: mean_std(s["col"][GAP_KEY])[0] for x, s in stats.items()}
        aurocs = {x: mean_std(s["col"]["auroc_msp"])[0] for x, s in stats.items()}
        widest = max(means, key=lambda x: means[x])
        lowest = min(aurocs, key=lambda x: aurocs[x])
        order = ("as saturation would have it" if widest == "hem" and lowest == "hem"
                 else "not as saturation alone would have it")  # fmt: skip
        lines.append(
            f"- {ds}: the largest mean known gap is {loss_label(widest)}'s "
            f"({means[widest]:.2f} HEM margins; HEM {means['hem']:.2f}), the lowest MSP AUROC "
            f"{loss_label(lowest)}'s ({100 * aurocs[lowest]:.1f} %; HEM "
            f"{100 * aurocs['hem']:.1f} %): the losses' means are ordered {order}."
        )
        if "ce" in by_loss:
            hem_mls = [m.get("auroc_mls", float("nan")) for m in by_loss["hem"]]
            ce_mls = [m.get("auroc_mls", float("nan")) for m in by_loss["ce"]]
            if len(hem_mls) == len(ce_mls):
                _, lo, hi = paired_interval(hem_mls, ce_mls)
                iv = interval_text(hem_mls, ce_mls)
                if hi < 0:
                    lines.append(
                        f"- {ds}: HEM's max-logit AUROC is also below CE's ({iv}); the max "
                        "logit does not pass through the softmax, so softmax saturation "
                        "cannot account for that difference."
                    )
                elif lo > 0:
                    lines.append(f"- {ds}: HEM's max-logit AUROC is above CE's ({iv}).")
                else:
                    lines.append(f"- {ds}: HEM's and CE's max-logit AUROCs are not measured "
                                 f"apart ({iv}).")  # fmt: skip
    within = {loss_label(x): st["msp"][:2] for x, st in stats.items()}
    lines.append(f"- {ds}: saturation (a large gap) as the explanation of a lower AUROC is "
                 f"{saturation_verdict(pooled['msp'][:2], within)} (MSP).")  # fmt: skip
    return lines


def _sweep_part(runs: list[tuple[dict, dict, dict]], result: dict) -> str:
    """HEM at each margin scale: lr, gap, kept, AUROC, and how AUROC goes with the margin."""
    default = float(result["settings"].get("loss_options", {}).get("margin_scale", 2000.0))
    hem = [(g, m, e) for g, m, e in runs if g["loss"] == "hem"]
    if not any("margin_scale" in g for g, _, _ in hem):
        return ""
    fixed = all(e.get("selection", {}).get("fixed_from") for g, _, e in hem if "margin_scale" in g)
    note = ("Every scale trains at the lr chosen for HEM at the default scale (`fixed_from` in "
            "each sweep run's selection record): only the margin varies." if fixed else
            "**These sweep runs chose their own lr** (records from before the sweep took "
            "HEM's default-scale lr): margin and lr vary together, so the table does not "
            "separate them.")  # fmt: skip
    rows, lines = [], []
    for ds in dict.fromkeys(g["dataset"] for g, _, _ in hem):
        by_scale: dict[float, list[tuple[dict, dict]]] = {}
        for g, m, e in hem:
            if g["dataset"] == ds:
                by_scale.setdefault(float(g.get("margin_scale") or default), []).append((m, e))
        xs, ys, gaps = [], [], []
        for sc in sorted(by_scale):
            ms = [m for m, _ in by_scale[sc]]
            lrs = sorted({e.get("lr") for _, e in by_scale[sc] if e.get("lr") is not None})
            rows.append([ds, f"{sc:g} (x{sc / default:g})", ", ".join(f"{v:g}" for v in lrs),
                         _mean([m.get(GAP_KEY) for m in ms]),
                         _mean([m.get("gap_own_margins_known") for m in ms]),
                         _mean([m.get("kept_hem_known") for m in ms], 100, 3),
                         _mean([m.get("auroc_msp") for m in ms], 100, 1),
                         _mean([m.get("auroc_mls") for m in ms], 100, 1)])  # fmt: skip
            xs += [sc] * len(ms)
            ys += [m.get("auroc_msp") for m in ms]
            gaps += [m.get(GAP_KEY) for m in ms]
        rho, p, n = spearman(xs, ys)
        rg = spearman(xs, gaps)
        if math.isnan(rho) or p >= ALPHA:
            how = f"no monotone change of the MSP AUROC with the margin is measured ({rho_cell(rho, p, n)})"
        elif rho < 0:
            how = f"a larger margin goes with a **lower** MSP AUROC ({rho_cell(rho, p, n)})"
        else:
            how = f"a larger margin goes with a **higher** MSP AUROC ({rho_cell(rho, p, n)})"
        lines.append(f"- {ds}: {'at the one lr' if fixed else 'with each scale its own lr'}, "
                     f"{how}; ρ(margin scale, known gap) {rho_cell(*rg)}.")  # fmt: skip
    return "\n\n".join([
        "#### HEM's margin sweep" + (" at one lr" if fixed else ""),
        note,
        md_table(["dataset", "margin scale", "lr", "gap known (default HEM margins)",
                  "gap known (own margins)", "kept known %", "AUROC MSP %", "AUROC MLS %"],
                 rows),
        "\n".join(lines),
    ])  # fmt: skip
