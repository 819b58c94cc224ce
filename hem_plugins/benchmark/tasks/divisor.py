"""HEM's divisor: ``"kept"`` (|K|, the paper's) against ``"rows"`` (|V|) and ``"floor"``
(``max(|K|, f |V|)``), on parts of 3a, 3c, 3g and 3e (``docs/divisor.md``).

Each *part* runs a paper task's ``run_seed`` (the task objects are handed in by the
registry, :data:`.TASKS`) with this task's losses (``hem``, ``hem_rows``, ``hem_floor``)
and the part's settings (``tasks.divisor.<part>`` over the shared sections); its records
get ``group["part"]``, and its selection keys the prefix ``<part>/``, so that one tuned
file section (``tuned["divisor"]``) holds every part's choices. The paper tasks' own
settings, records and reports stay theirs.

``f`` (``hem_floor``) is chosen on validation data: in ``selection.mode="validation"``
(the ``tune`` profile) ``hem_floor``'s grid is ``lr x divisor_floor`` over
``floors``; the report's *f selection* table gives, per validation key, the best
validation score over the lrs at each ``f``, and their mean. In ``"tuned"`` mode (``quick``)
``hem_floor`` runs at ``floor`` (default :data:`hem_plugins.functional.DIVISOR_FLOOR`)
with the lr that was best at that ``f`` on validation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...functional import DIVISOR_FLOOR
from ..config import merge
from ..losses import loss_label
from ..protocol import best_point, claim_verdict, health_cell, interval_text, min_train_acc
from .base import BaseTask, Context, Task
from .sections import aggregate, fmt, md_table, mean_std, records, save_figure

#: The tasks whose runs the parts rerun, in the order they run.
PARTS = ("openset", "imbalanced", "lr_sensitivity", "segmentation")
#: Keys of ``tasks.divisor`` that are this task's own, not handed to the parts.
OWN = ("parts", "floors", "floor", *PARTS)
#: Per part: (group keys besides ``loss``, [(metric, label, scale, digits)]) of its table.
TABLES = {
    "openset": (("dataset",), [("acc", "acc %", 100, 1), ("auroc_msp", "AUROC MSP %", 100, 1),
                               ("auroc_mls", "AUROC MLS %", 100, 1),
                               ("kept_fraction", "kept %", 100, 2),
                               ("gap_over_margin", "gap / margin", 1, 1)]),
    "imbalanced": (("dataset", "ratio"), [("balanced_acc", "balanced acc %", 100, 1),
                                          ("tail_acc", "tail acc %", 100, 1),
                                          ("kept_fraction", "kept %", 100, 2)]),
    "lr_sensitivity": (("dataset", "schedule", "lr"), [("final_acc", "test acc %", 100, 1),
                                                       ("tail_std", "last-quarter std %", 100, 2)]),
    "segmentation": (("dataset",), [("mIoU", "mIoU %", 1, 1), ("mAcc", "mAcc %", 1, 1)]),
}  # fmt: skip
#: Per part: the metrics the verdicts compare (higher is better).
VERDICT_METRICS = {
    "openset": ("acc", "auroc_msp", "auroc_mls"),
    "imbalanced": ("balanced_acc",),
    "lr_sensitivity": ("final_acc",),
    "segmentation": ("mIoU",),
}
COLORS = {"hem": "tab:blue", "hem_rows": "tab:orange", "hem_floor": "tab:green"}


def floor_value(settings: dict) -> float:
    """The ``f`` that ``hem_floor`` runs at outside selection (``floor``, else the default)."""
    f = settings.get("floor")
    return float(DIVISOR_FLOOR if f is None else f)


def _restrict_to_floor(entry: dict, f: float) -> dict:
    """A tuned ``hem_floor`` entry at ``f`` alone: the lr best on validation at that ``f``."""
    grid = [p for p in entry.get("grid", []) if math.isclose(p[0].get("divisor_floor", f), f)]
    if not grid:
        raise KeyError(
            f"tuned hem_floor entry has no grid point at divisor_floor={f:g}: rerun "
            "`python tools/benchmark.py --profile tune --tasks divisor` with that f in `floors`"
        )
    chosen = {k: v for k, v in grid[best_point(grid)][0].items() if k != "divisor_floor"}
    return {**entry, "chosen": chosen, "grid": entry["grid"]}


def part_settings(settings: dict, part: str) -> dict:
    """Settings of one part: the shared sections, this task's ``losses``, the part's own
    ``tasks.divisor.<part>``, and the part's tuned entries (prefix ``<part>/`` dropped)."""
    sub = {k: copy.deepcopy(v) for k, v in settings.items() if k not in OWN and k != "tuned"}
    sub = merge(sub, settings.get(part) or {})
    sub.setdefault("losses", list(settings["losses"]))
    f = floor_value(settings)
    if "hem_floor" in sub["losses"]:
        sel = sub.setdefault("selection", {})
        if part != "segmentation" and sel.get("mode", "validation") == "validation":
            by_loss = sel.setdefault("grid_by_loss", {})
            lrs = sel.get("grid", {}).get("lr")
            floors = settings.get("floors") or [f]
            by_loss["hem_floor"] = {**({"lr": lrs} if lrs else {}),
                                    "divisor_floor": [float(x) for x in floors]}  # fmt: skip
        sub["loss_options"] = {**sub.get("loss_options", {}), "divisor_floor": f}
    prefix = part + "/"
    tuned = {}
    for key, entry in settings.get("tuned", {}).get("divisor", {}).items():
        if key.startswith(prefix):
            inner = key[len(prefix) :]
            if inner.endswith("/hem_floor") and part != "segmentation":
                entry = _restrict_to_floor(entry, f)
            tuned[inner] = entry
    # HEM (kept) reruns the part task's own setting: the part task's entry is the one value
    # of that setting (protocol.SELECTION_OWNERS), read here under the part's key
    for inner, entry in settings.get("tuned", {}).get(part, {}).items():
        if inner.rsplit("/", 1)[-1] in sub["losses"]:
            tuned[inner] = entry
    sub["tuned"] = {part: tuned}
    return sub


class DivisorTask(BaseTask):
    """Reruns :data:`PARTS` with HEM's three divisors; ``part_tasks`` maps each part's name to
    its task."""

    name = "divisor"
    title = "HEM's divisor: kept errors, valid rows, or a floor"
    claim = (
        "HEM averages over the kept errors (|K|) so that it keeps learning when few errors "
        "are left (the paper's point against multi-class margin loss)."
    )

    def __init__(self, part_tasks: Mapping[str, Task]) -> None:
        missing = [p for p in PARTS if p not in part_tasks]
        if missing:
            raise ValueError(f"divisor: no task given for part(s) {missing}")
        self.part_tasks = {p: part_tasks[p] for p in PARTS}

    def parts(self, settings: dict) -> list[str]:
        parts = settings.get("parts", list(PARTS))
        bad = [p for p in parts if p not in PARTS]
        if bad:
            raise ValueError(f"divisor: unknown part(s) {bad}; choose from {list(PARTS)}")
        return parts

    def units(self, settings: dict) -> int:
        return sum(
            self.part_tasks[p].units(part_settings(settings, p)) for p in self.parts(settings)
        )

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        recs = []
        for part in self.parts(settings):
            sub = part_settings(settings, part)
            sub_ctx = replace(ctx, work_dir=(ctx.work_dir or Path("work_dirs")) / "divisor")
            for rec in self.part_tasks[part].run_seed(sub, seed, sub_ctx)["records"]:
                rec["group"] = {"part": part, **rec["group"]}
                sel = rec.get("extra", {}).get("selection")
                if sel:
                    sel["key"] = f"{part}/{sel['key']}"
                recs.append(rec)
        return {"records": recs}

    # ---- report ---------------------------------------------------------------------------
    def _part_result(self, result: dict, part: str) -> dict:
        per_seed = {
            seed: {"records": [r for r in per["records"] if r["group"].get("part") == part]}
            for seed, per in result["per_seed"].items()
        }
        return {"settings": part_settings(result["settings"], part), "seeds": result["seeds"],
                "per_seed": per_seed}  # fmt: skip

    def floor_selection(self, result: dict) -> tuple[str, dict[float, float]]:
        """The f selection table (validation scores of ``hem_floor``'s grid) and the mean
        over keys of the best score at each f."""
        scores: dict[str, dict[tuple, list[float]]] = {}  # key -> (f, lr) -> score per seed
        seen = set()
        for seed, rec in records(result):
            sel = rec.get("extra", {}).get("selection") or {}
            if rec["group"].get("loss") != "hem_floor" or (sel.get("key"), seed) in seen:
                continue
            seen.add((sel.get("key"), seed))
            for point in sel.get("grid", []):
                f = point[0].get("divisor_floor")
                if f is None or (len(point) > 2 and not point[2]):
                    continue
                at = (float(f), point[0].get("lr"))
                scores.setdefault(sel["key"], {}).setdefault(at, []).append(float(point[1]))
        best: dict[str, dict[float, float]] = {}  # key -> f -> best mean score over the lrs
        for key, by_point in scores.items():
            for (f, _), vals in by_point.items():
                vals = [v for v in vals if not math.isnan(v)]
                if vals:
                    best.setdefault(key, {})[f] = max(best.get(key, {}).get(f, -math.inf),
                                                      float(np.mean(vals)))  # fmt: skip
        floors = sorted({f for at in best.values() for f in at})
        if not floors:
            return "", {}
        rows = [[key, *(f"{100 * at[f]:.1f}" if f in at else "—" for f in floors)]
                for key, at in best.items()]  # fmt: skip
        means = {f: float(np.mean([at[f] for at in best.values() if f in at])) for f in floors}
        rows.append(["**mean**", *(f"**{100 * means[f]:.2f}**" for f in floors)])
        header = ["validation key (part/dataset/...)", *(f"f = {f:g}" for f in floors)]
        return md_table(header, rows), means

    def _table(self, part_res: dict, part: str) -> str:
        keys, cols = TABLES[part]
        min_acc = min_train_acc(part_res["settings"])
        agg = aggregate(part_res, (*keys, "loss"))
        rows = []
        for key, m in agg.items():
            lr = ""
            lrs = [r["extra"].get("lr") for _, r in records(part_res)
                   if tuple(r["group"].get(k) for k in (*keys, "loss")) == key]  # fmt: skip
            if part != "lr_sensitivity" and lrs:
                lr = " / ".join(dict.fromkeys(f"{v:g}" for v in lrs if v is not None))
            cells = [fmt(m.get(k), scale, digits) for k, _, scale, digits in cols]
            rows.append([*("—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                           for v in key[:-1]), loss_label(key[-1]),
                         health_cell(m, min_acc), *([lr] if part != "lr_sensitivity" else []),
                         *cells])  # fmt: skip
        header = [*keys, "loss", "healthy runs", *(["lr"] if part != "lr_sensitivity" else []),
                  *(label for _, label, _, _ in cols)]  # fmt: skip
        return md_table(header, rows)

    def comparisons(self, part_res: dict, part: str) -> list[list[str]]:
        """Rows ``[part, group, metric, rows vs kept, floor vs kept]`` of paired verdicts."""
        keys, _ = TABLES[part]
        min_acc = min_train_acc(part_res["settings"])
        agg = aggregate(part_res, (*keys, "loss"))
        out = []
        for group in dict.fromkeys(k[:-1] for k in agg):
            base = agg.get((*group, "hem"))
            if not base:
                continue
            label = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in group)
            for metric in VERDICT_METRICS[part]:
                scale = 1.0 if part == "segmentation" else 100.0
                cells = []
                for ours in ("hem_rows", "hem_floor"):
                    a = agg.get((*group, ours))
                    if not a or metric not in a or metric not in base:
                        cells.append("—")
                        continue
                    labels = (loss_label(ours), loss_label("hem"))
                    v = claim_verdict(a, base, metric, labels, min_acc)
                    v = {"agrees": "higher", "disagrees": "lower"}.get(v, v)
                    cells.append(f"{interval_text(a[metric], base[metric], scale)}: **{v}**")
                out.append([part, label, metric, *cells])
        return out

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        """One figure: gap / margin per epoch (3a) and test accuracy against lr (3g), per dataset."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        curves: dict[str, dict[str, list]] = {}
        for _, rec in records(result):
            g, e = rec["group"], rec.get("extra", {})
            if g.get("part") == "openset" and e.get("gap_over_margin_curve"):
                curves.setdefault(g["dataset"], {}).setdefault(g["loss"], []).append(
                    e["gap_over_margin_curve"]
                )
        lr_res = self._part_result(result, "lr_sensitivity")
        lr_agg = aggregate(lr_res, ("dataset", "schedule", "loss", "lr"))
        datasets = list(dict.fromkeys([*curves, *(k[0] for k in lr_agg)]))
        if not datasets:
            return []
        fig, axes = plt.subplots(2, len(datasets), figsize=(4.6 * len(datasets), 6.2),
                                 squeeze=False)  # fmt: skip
        for col, ds in enumerate(datasets):
            ax = axes[0][col]
            for loss, runs in curves.get(ds, {}).items():
                n = min(len(r) for r in runs)
                a = np.asarray([r[:n] for r in runs], dtype=float)
                ax.plot(np.arange(1, n + 1), np.nanmean(a, 0), color=COLORS.get(loss),
                        label=loss_label(loss))  # fmt: skip
                ax.fill_between(np.arange(1, n + 1), np.nanmin(a, 0), np.nanmax(a, 0),
                                color=COLORS.get(loss), alpha=0.15)  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"3a {ds}: known test gap / margin")
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            ax = axes[1][col]
            for (d, schedule, loss), pts in _by_curve(lr_agg).items():
                if d != ds:
                    continue
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts],
                            yerr=[100 * p[2] for p in pts], marker="o", capsize=3,
                            ls="-" if schedule == "cosine" else "--", color=COLORS.get(loss),
                            label=f"{loss_label(loss)}, {schedule}")  # fmt: skip
            ax.set_xscale("log")
            ax.set_title(f"3g {ds}: test accuracy by initial lr")
            ax.set_xlabel("initial lr")
            ax.set_ylabel("test acc %")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle("HEM divisor: kept (|K|), rows (|V|), floor (max(|K|, f|V|)); "
                     "mean over seeds, band min-max", fontsize=9)  # fmt: skip
        return [save_figure(fig, out_dir, f"{self.name}.png")]

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        f = floor_value(s)
        parts = [
            f"## {self.title}",
            "HEM's `'mean'` divides the sum of the kept errors by `divisor` (`docs/divisor.md`): "
            "**kept** = |K|, the number of kept errors (the paper's, `HEM`); **rows** = |V|, the "
            "number of valid rows or pixels (`HEM (rows)`); **floor** = max(|K|, f |V|) "
            f"(`HEM (floor)`, f = {f:g}). Each part reruns an existing task with these three "
            "losses, its lr chosen per loss on validation data as in that task (3g trains "
            f"every lr of its grid){_source(s)}; mean ± std over seeds "
            + ", ".join(str(x) for x in result["seeds"])
            + ".",
            f"**Paper's claim.** {self.claim} The divisor bounds the late steps instead; the "
            "question is whether that costs the learning pressure.",
        ]
        table, means = self.floor_selection(result)
        if table:
            # the suite's tie rule (protocol.best_point): no lr here, so a tie goes to the
            # first f in grid order, the smaller f (floors are sorted)
            floors = list(means)
            best = floors[best_point([[{"divisor_floor": f}, means[f]] for f in floors])]
            parts += [
                "### Choice of f (validation data)",
                "`HEM (floor)` trained at every lr × f of its grid on the training data less its "
                "validation carve; each cell is the best validation score (acc, balanced acc for "
                "3c) over the lrs at that f, averaged over the tune seeds. "
                f"Best mean: f = {best:g}; the default (`DIVISOR_FLOOR`) is f = {f:g}.",
                table,
            ]
        verdicts = []
        for part in self.parts(s):
            res = self._part_result(result, part)
            if not any(per["records"] for per in res["per_seed"].values()):
                continue
            title = {"openset": "3a open set", "imbalanced": "3c imbalanced",
                     "lr_sensitivity": "3g lr sensitivity (every lr trained)",
                     "segmentation": "3e segmentation (DigitMosaic)"}[part]  # fmt: skip
            parts += [f"### {title}", self._table(res, part)]
            verdicts += self.comparisons(res, part)
        if verdicts:
            parts += [
                "### Paired differences against the paper's divisor",
                "Δ is the mean paired difference (points; 3e mIoU in points of %) of `HEM (rows)` "
                "or `HEM (floor)` minus `HEM`, with its 95 % t-interval; **higher** / **lower** "
                "when the interval excludes 0, **not decided** when a run of either side is "
                f"unhealthy (training accuracy below {100 * min_train_acc(s):g} %, or the part's "
                "own threshold, or diverged).",
                md_table(["part", "group", "metric", "rows − kept", "floor − kept"], verdicts),
            ]
        for fig in self.plot(result, out_dir):
            parts.append(f"![HEM divisor: gap over margin and lr sensitivity]({fig})")
        return "\n\n".join(p for p in parts if p)


def _source(settings: dict) -> str:
    sel = settings.get("selection", {})
    return f", read from `{sel.get('file')}`" if sel.get("mode") == "tuned" else ""


def _by_curve(agg: dict) -> dict[tuple, list[tuple[float, float, float]]]:
    """``{(dataset, schedule, loss): [(lr, mean final acc, std), ...]}`` sorted by lr."""
    out: dict[tuple, list] = {}
    for (ds, schedule, loss, lr), m in agg.items():
        mean, std = mean_std(m.get("final_acc", []))
        out.setdefault((ds, schedule, loss), []).append((float(lr), mean, std))
    return {k: sorted(v) for k, v in out.items()}
