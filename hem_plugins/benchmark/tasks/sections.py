"""What the tasks' report sections are made of: records aggregated over seeds, formatted
cells, the tables and notes several tasks show, and figures.

Every function reads the JSON a task's ``run_seed`` produced (``result = {"settings",
"seeds", "per_seed": {seed: {"records": [...]}}}``), never a live run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from ..config import model_cfg_for


def records(result: dict) -> Iterable[tuple[int, dict]]:
    """``(seed, record)`` of every record of ``result``, seeds in the order of ``per_seed``."""
    for seed, per in result["per_seed"].items():
        for rec in per["records"]:
            yield int(seed), rec


def aggregate(
    result: dict,
    group_keys: tuple[str, ...],
    where: Callable[[dict], bool] | None = None,
) -> dict[tuple, dict[str, list[float]]]:
    """``{group values: {metric: [value per seed]}}`` in first-seen order (seeds in the
    order of ``per_seed``, so two groups' lists pair up by seed); ``where(group)`` keeps
    only some records."""
    out: dict[tuple, dict[str, list[float]]] = {}
    for _, rec in records(result):
        if where is not None and not where(rec["group"]):
            continue
        key = tuple(rec["group"].get(k) for k in group_keys)
        slot = out.setdefault(key, {})
        for m, v in rec["metrics"].items():
            slot.setdefault(m, []).append(float(v))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(values: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` (of ``values * scale``), or ``—``."""
    if not values:
        return "—"
    m, s = mean_std(values)
    if math.isnan(m):
        return "—"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


#: A margin-loss run whose known-sample gap (top1 - top2 logit) exceeds this many
#: margins is flagged *saturated*: its softmax is near one-hot on the known samples
#: (whether that goes with a lower AUROC, 3a's "What the numbers support" reads).
SATURATED_GAP = 10.0

DIAGNOSTICS_NOTE = (
    "*kept %* is the share of the entries that HEM's loss still averages, "
    "|K| / (|V| C), over the last epoch (for MM and HEM without the threshold: the non-zero "
    "errors); *gap / margin* is the mean top-1 minus top-2 logit of the correctly "
    "classified known test samples, in units of the row's margin. A small kept share makes "
    "each HEM step large (it divides by |K|), and a gap far above 1 margin "
    f"(**saturated**: > {SATURATED_GAP:g}) means the logits grew past what the loss asks. "
    "Whether a large gap goes with a lower AUROC is not assumed: 3a's section *What the "
    "numbers support* measures it over the runs."
)


def health_note(min_acc: float) -> str:
    return (
        f"*healthy runs*: runs whose final accuracy on their own training data is at least "
        f"{100 * min_acc:g} % and that did not diverge; ⚠ marks a group with an unhealthy run, "
        "and no verdict is drawn from a comparison with such a group."
    )


def diagnostics_cells(slot: dict[str, list[float]]) -> list[str]:
    """``[kept %, gap / margin]`` cells of a margin loss's aggregate slot (``—`` otherwise);
    the gap is flagged **saturated** when a run's exceeds :data:`SATURATED_GAP`."""
    if "kept_fraction" not in slot:
        return ["—", "—"]
    gaps = [g for g in slot.get("gap_over_margin", []) if not math.isnan(g)]
    n_sat = sum(g > SATURATED_GAP for g in gaps)
    gap = fmt(gaps, 1.0, 1) + (f" **saturated** ({n_sat}/{len(gaps)})" if n_sat else "")
    return [fmt(slot["kept_fraction"], 100.0, 2), gap]


def health_fmt(slot: dict[str, list[float]], metric: str, min_acc: float, scale: float = 100.0,
               digits: int = 1) -> str:  # fmt: skip
    """:func:`fmt` of ``slot[metric]``, with ``⚠`` when a run of the slot is unhealthy."""
    from ..protocol import unhealthy_seeds

    text = fmt(slot.get(metric), scale, digits)
    return text + (" ⚠" if unhealthy_seeds(slot, min_acc) else "")


def selection_table(result: dict, group_keys: tuple[str, ...]) -> str:
    """Per group: where its hyper-parameters were chosen, the validation score of every
    grid point (of the first seed, or the seeds' mean in a tuned file) and the chosen
    values over the seeds."""
    rows: dict[tuple, list] = {}
    for _, rec in records(result):
        sel = rec.get("extra", {}).get("selection")
        if not sel:
            continue
        key = tuple(rec["group"].get(k) for k in group_keys)
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sel["chosen"].items())  # fmt: skip
        if key not in rows:
            grid = "; ".join(
                ", ".join(
                    f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in pt[0].items()
                )
                + f": {100 * pt[1]:.1f}"
                + (" (did not train)" if len(pt) > 2 and not pt[2] else "")
                for pt in sel["grid"]
            )
            cells = ["—" if k is None else str(k) for k in key]
            rows[key] = [*cells, sel["lr_selected_on"], sel["metric"], grid, {chosen: None}]
        else:
            rows[key][-1][chosen] = None
    if not rows:
        return ""
    body = [r[:-1] + [" / ".join(r[-1])] for r in rows.values()]
    return md_table(
        [*group_keys, "chosen on", "score", "validation score % per grid point", "chosen"], body
    )


def claim_cell(
    ours: dict | None,
    theirs: dict | None,
    metric: str,
    labels: tuple[str, str],
    min_acc: float,
    higher_is_better: bool = True,
    tolerance: float = 0.0,
    scale: float = 100.0,
) -> str:
    """``"91.0 vs 70.0 (n=5), Δ +21.0 [+8.3, +33.7]: **agrees**"`` for a summary table.

    ``n`` is the number of seed pairs the interval is computed from; ``⚠`` follows it
    when a run on either side is unhealthy (the verdict then says which)."""
    from ..protocol import claim_verdict, interval_text

    if not ours or not theirs:
        return "—"
    m1, m2 = mean_std(ours[metric])[0], mean_std(theirs[metric])[0]
    v = claim_verdict(ours, theirs, metric, labels, min_acc, higher_is_better, tolerance)
    return (
        f"{m1 * scale:.1f} vs {m2 * scale:.1f} ({n_cell(ours, theirs, metric, min_acc)}), "
        f"{interval_text(ours[metric], theirs[metric], scale)}: **{v}**"
    )


def n_cell(ours: dict, theirs: dict, metric: str, min_acc: float) -> str:
    """``"n=5"``: the seed pairs with a value on both sides; ``"n=5 ⚠"`` when a run of
    either side is unhealthy (:func:`..protocol.unhealthy_seeds`)."""
    from ..protocol import unhealthy_seeds

    n = sum(
        1
        for a, b in zip(ours[metric], theirs[metric], strict=False)
        if not (math.isnan(a) or math.isnan(b))
    )
    bad = unhealthy_seeds(ours, min_acc) or unhealthy_seeds(theirs, min_acc)
    return f"n={n}" + (" ⚠" if bad else "")


def per_seed_table(
    result: dict, group_keys: tuple[str, ...], metrics: tuple[str, ...], scale: float = 100.0
) -> str:
    """Every run's values, one row per (group, seed), inside a collapsed ``<details>`` block."""
    header = [*group_keys, "seed", *metrics]
    rows = []
    for seed, rec in sorted(records(result), key=lambda sr: tuple(str(sr[1]["group"].get(k)) for k in group_keys) + (sr[0],)):  # fmt: skip
        vals = [rec["metrics"].get(m) for m in metrics]
        if all(v is None for v in vals):
            continue
        rows.append(
            ["—" if rec["group"].get(k) is None else str(rec["group"][k]) for k in group_keys]
            + [str(seed)]
            + ["—" if v is None else f"{v * scale:.1f}" for v in vals]
        )
    if not rows:
        return ""
    return (
        "<details><summary>Per-seed values</summary>\n\n"
        + md_table(header, rows)
        + "\n\n</details>"
    )


def save_figure(fig, out_dir: Path, name: str) -> str:
    """Lay out, save as PNG (110 dpi) into ``out_dir`` and close ``fig``; returns ``name``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def train_settings_table(settings: dict, losses: list[str], lr_text: str | None = None) -> str:
    """Model, epochs, optimizer, schedule, and how the initial lr was set (per dataset;
    ``lr_text`` replaces the last)."""
    from ..protocol import grid_for

    train = settings["train"]
    rows = []
    for ds in settings.get("datasets", []):
        model = model_cfg_for(settings, ds)
        t = {**train, **settings.get("dataset_train", {}).get(ds, {})}
        mode = settings.get("selection", {}).get("mode", "validation")
        grids = {point_grid(grid_for(settings, x)) for x in losses}
        lr = lr_text or (
            f"chosen per loss on validation data from {' / '.join(sorted(grids))}"
            + (f" (read from `{settings['selection'].get('file')}`)" if mode == "tuned" else "")
        )
        rows.append(
            [
                ds,
                _model_label(model, ds),
                str(t.get("epochs")),
                str(t.get("batch_size")),
                f"SGD m={t.get('momentum', 0.9)} wd={t.get('weight_decay', 5e-4)}",
                t.get("schedule", "cosine"),
                lr,
            ]
        )
    return md_table(
        ["dataset", "model", "epochs", "batch", "optimizer", "schedule", "initial lr"], rows
    )


def point_grid(grid: dict) -> str:
    """``lr {0.01, 0.1}`` style text of a selection grid."""
    return " × ".join(f"{k} {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in grid.items())


def _model_label(model: dict, dataset: str) -> str:
    kind = model.get("kind", "auto")
    if kind == "auto":
        kind = "mlp" if dataset in ("digits", "mnist1d") else "cnn"
    if kind == "mlp":
        return "MLP " + "-".join(str(h) for h in model.get("hidden", (256, 256))) + ", BN, ReLU"
    if kind == "cnn1d":
        return f"1-D CNN, 3 conv-BN-ReLU layers of {model.get('channels', 16)} channels"
    return "CNN (2 conv-BN-ReLU blocks)"


def margins_table(result: dict) -> str:
    """The margin each margin loss used, per group, from the first seed's records."""
    rows, seen = [], set()
    first = next(iter(result["per_seed"].values()), {"records": []})
    for rec in first["records"]:
        margin = rec.get("extra", {}).get("margin")
        if margin is None:
            continue
        g = rec["group"]
        key = tuple((k, v) for k, v in g.items() if k not in ("attack", "eps"))
        if key in seen:
            continue
        seen.add(key)
        m = (
            margin
            if isinstance(margin, float)
            else "[" + ", ".join(f"{v:.3g}" for v in margin) + "]"
        )
        m = f"{m:.3f}" if isinstance(m, float) else m
        rows.append(
            [", ".join(f"{k}={v}" for k, v in key), str(rec["extra"].get("n_train", "")), m]
        )
    if not rows:
        return ""
    return md_table(["run", "n_train", "margin (from margin_for_dataset / class_margins)"], rows)
