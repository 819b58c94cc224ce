"""The interface every benchmark task implements, and helpers they share.

A task is a module-level object with

* ``name`` (the key in ``configs/benchmark/*.py``'s ``tasks`` and ``--tasks``),
  ``title`` (a section heading), ``claim`` (the paper's claim, one sentence);
* ``units(settings) -> int``: trainings per seed (for the progress bar);
* ``run_seed(settings, seed, ctx) -> dict``: ``{"records": [...]}``, each record
  ``{"group": {...}, "metrics": {name: float}, "extra": {...}}``; the runner stores
  it under the seed in ``results.json``;
* ``render(result, out_dir) -> str``: the Markdown section of ``report.md``
  (writing its PNGs into ``out_dir``) from ``result = {"settings", "seeds",
  "per_seed": {seed: {"records": [...]}}}``, i.e. from JSON alone;
* ``headline(result) -> dict[str, dict[str, str]]``: ``{column: {loss: cell}}``
  for the README's headline table.

Tasks that call other tools (continual learning through ``tools/continual.py``,
segmentation through ``tools/train_seg.py``) load them with :func:`load_tool`.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ..protocol import verdict  # noqa: F401  (re-exported: the tasks' verdict rule)

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Context:
    """What a task needs from the runner besides its settings."""

    device: str = "cpu"
    data_root: str | None = None
    work_dir: Path | None = None
    advance: Callable[[str], None] = field(default=lambda desc: None)


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` of this repository as a module (tools/ is no package)."""
    path = REPO_ROOT / "tools" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"tool {name!r} not found: expected {path}")
    mod_name = f"_hem_tool_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def records(result: dict) -> Iterable[tuple[int, dict]]:
    for seed, per in result["per_seed"].items():
        for rec in per["records"]:
            yield int(seed), rec


def aggregate(result: dict, group_keys: tuple[str, ...]) -> dict[tuple, dict[str, list[float]]]:
    """``{group values: {metric: [value per seed]}}`` in first-seen order."""
    out: dict[tuple, dict[str, list[float]]] = {}
    for _, rec in records(result):
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
            [str(rec["group"].get(k)) for k in group_keys]
            + [str(seed)]
            + ["—" if v is None else f"{v * scale:.1f}" for v in vals]
        )
    if not rows:
        return ""
    return (
        "<details><summary>Per-seed values</summary>\n\n" + md_table(header, rows) + "\n\n</details>"
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


def train_settings_table(settings: dict, losses: list[str]) -> str:
    """Model, epochs, optimizer, schedule and the initial lr of every loss (per dataset)."""
    from ..losses import loss_label
    from ..training import lr_for

    train = settings["train"]
    rows = []
    for ds in settings.get("datasets", []):
        model = model_cfg_for(settings, ds)
        t = {**train, **settings.get("dataset_train", {}).get(ds, {})}
        lrs = ", ".join(f"{loss_label(x)} {lr_for(x, t):g}" for x in losses)
        rows.append(
            [
                ds,
                _model_label(model, ds),
                str(t.get("epochs")),
                str(t.get("batch_size")),
                f"SGD m={t.get('momentum', 0.9)} wd={t.get('weight_decay', 5e-4)}",
                t.get("schedule", "cosine"),
                lrs,
            ]
        )
    return md_table(
        ["dataset", "model", "epochs", "batch", "optimizer", "schedule", "initial lr"], rows
    )


def _model_label(model: dict, dataset: str) -> str:
    kind = model.get("kind", "auto")
    if kind == "auto":
        kind = "mlp" if dataset in ("digits", "mnist1d") else "cnn"
    if kind == "mlp":
        return "MLP " + "-".join(str(h) for h in model.get("hidden", (256, 256))) + ", ReLU"
    if kind == "cnn1d":
        return f"1-D CNN, 3 conv layers of {model.get('channels', 16)} channels"
    return "CNN (2 conv blocks)"


def model_cfg_for(settings: dict, dataset: str) -> dict:
    """``model`` merged with ``dataset_model[dataset]`` (per-dataset overrides)."""
    return {**settings.get("model", {}), **settings.get("dataset_model", {}).get(dataset, {})}


def train_cfg_for(settings: dict, dataset: str) -> dict:
    """``train`` merged with ``dataset_train[dataset]`` (per-dataset overrides)."""
    return {**settings["train"], **settings.get("dataset_train", {}).get(dataset, {})}


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
