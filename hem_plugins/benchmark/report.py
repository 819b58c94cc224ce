"""``report.md`` and the headline table, from the results JSON alone."""

from __future__ import annotations

import json
from pathlib import Path

from .losses import LOSSES, loss_label
from .tasks import TASKS
from .tasks.base import md_table


def headline_table(results: dict, dataset: str | None = None) -> str:
    """One row per loss, one column per task's main metric (on ``dataset``, by default
    the profile's ``headline_dataset``)."""
    dataset = dataset or results.get("headline_dataset")
    columns: dict[str, dict[str, str]] = {}
    for name, res in results["tasks"].items():
        task = TASKS.get(name)
        if task is None or not hasattr(task, "headline"):
            continue
        ds = dataset if dataset in res["settings"].get("datasets", [dataset]) else (
            res["settings"].get("datasets") or [None])[0]  # fmt: skip
        columns.update(task.headline(res, ds))
    losses = [name for name in LOSSES if any(name in col for col in columns.values())]
    rows = [[loss_label(x)] + [col.get(x, "—") for col in columns.values()] for x in losses]
    return md_table(["loss"] + list(columns), rows)


def render_report(results: dict, out_dir: str | Path) -> Path:
    """Write ``report.md`` (and every task's PNGs) into ``out_dir``; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = results.get("meta", {})
    parts = [
        "# HEM benchmark report",
        f"Profile `{meta.get('profile', '?')}`, seeds {meta.get('seeds')}, device "
        f"`{meta.get('device', 'cpu')}`, torch {meta.get('torch', '?')}; command: "
        f"`{meta.get('command', '?')}`; {meta.get('finished', '')}.",
        "Each result is mean ± std over the seeds. Beside each result: the paper's claim "
        "(Spratling & Schütt, arXiv:2501.12191) and whether this measurement agrees: "
        "**agrees** / **disagrees** when the difference of the means exceeds the larger of the "
        "two seed stds, else **inconclusive**. These are small models on small data: they test "
        "the direction of the paper's claims, not its numbers.",
    ]
    first = results.get("headline_dataset")
    others = [d for d in (results.get("config") or {}).get("datasets", []) if d != first]
    for ds in [first, *others]:
        parts += [f"## Headline (dataset `{ds}`)", headline_table(results, ds)]
    cfg = results.get("config")
    if cfg:
        lo = cfg.get("loss_options", {})
        parts += [
            "## Common settings",
            f"Datasets {cfg.get('datasets')} ({cfg.get('dataset_options')}); inputs scaled to "
            "[0, 1] and standardised inside the model. Optimizer SGD with momentum "
            f"{cfg['train'].get('momentum')}, weight decay {cfg['train'].get('weight_decay')}, "
            f"{cfg['train'].get('schedule')} schedule over all steps; initial lr by loss "
            f"{cfg['train'].get('lr')}, per-dataset overrides {cfg.get('dataset_train')}. "
            f"Margins: `margin_for_dataset(n_train, scale={lo.get('margin_scale', 2000.0):g})` for "
            "MM, HEM and HEM without threshold; `class_margins(class counts)` for HEM+. "
            f"LogitNorm temperature {lo.get('logitnorm_temperature', 0.04)}; logit-adjusted "
            f"tau {lo.get('logit_adjusted_tau', 1.0)}. Each task's section lists its own "
            "settings and the margins used.",
        ]
    timing = meta.get("task_seconds", {})
    if timing:
        parts.append(
            "Wall time per task: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()) + "."
        )
    for name, res in results["tasks"].items():
        task = TASKS.get(name)
        if task is None:
            parts.append(f"## {name}\n\n(no renderer registered for task {name!r})")
            continue
        parts.append(task.render(res, out))
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def render_from_json(json_path: str | Path, out_dir: str | Path | None = None) -> Path:
    json_path = Path(json_path)
    results = json.loads(json_path.read_text(encoding="utf-8"))
    return render_report(results, out_dir or json_path.parent)
