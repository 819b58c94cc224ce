"""``report.md`` and the headline table, from the results JSON alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .losses import LOSSES, loss_label
from .tasks import PAPER_TASKS, TASKS
from .tasks.sections import md_table


def headline_table(results: dict, dataset: str | None = None) -> str:
    """One row per loss, one column per task's main metric (on ``dataset``, by default
    the profile's ``headline_dataset``)."""
    dataset = dataset or results.get("headline_dataset")
    columns: dict[str, dict[str, str]] = {}
    for name, res in ordered_tasks(results):
        task = TASKS.get(name)
        if task is None:
            continue
        ds = dataset if dataset in res["settings"].get("datasets", [dataset]) else (
            res["settings"].get("datasets") or [None])[0]  # fmt: skip
        columns.update(task.headline(res, ds))
    losses = [name for name in LOSSES if any(name in col for col in columns.values())]
    rows = [[loss_label(x)] + [col.get(x, "—") for col in columns.values()] for x in losses]
    return md_table(["loss"] + list(columns), rows)


def ordered_tasks(results: dict) -> list[tuple[str, dict]]:
    """``results["tasks"]`` in report order (the registry's), whatever order they ran in."""
    tasks = results["tasks"]
    return [(t, tasks[t]) for t in TASKS if t in tasks] + [
        (t, r) for t, r in tasks.items() if t not in TASKS
    ]


def timing_text(meta: dict) -> str:
    """Wall and CPU seconds per task and in all (CPU: the wall time on an idle machine)."""
    wall, cpu = meta.get("task_seconds", {}), meta.get("task_cpu_seconds", {})
    cells = [
        f"{t} {w:.0f} s" + (f" (CPU {cpu[t]:.0f} s)" if t in cpu else "") for t, w in wall.items()
    ]
    jobs = int(meta.get("jobs", 1) or 1)
    if jobs > 1:  # the units ran side by side: a task's seconds are its units' summed
        text = (
            f"{jobs} worker processes, one thread each; wall time of the whole run "
            f"{meta.get('wall_seconds', float('nan')) / 60:.1f} min. Seconds per task (its "
            "units' own, summed): " + ", ".join(cells)
        )
    else:
        text = "Wall time per task: " + ", ".join(cells)
        text += f"; in all {sum(wall.values()) / 60:.1f} min"
    if cpu:
        missing = [t for t in wall if t not in cpu]
        text += f", CPU {sum(cpu.values()) / 60:.1f} min" + (
            f" (not recorded for {', '.join(missing)})" if missing else ""
        )
    return text + "."


def commands_text(meta: dict) -> str:
    """``command: `...` `` or, for results merged with ``--update``, each command and its tasks."""
    by_cmd: dict[str, list[str]] = {}
    for task, cmd in meta.get("task_commands", {}).items():
        by_cmd.setdefault(cmd, []).append(task)
    if len(by_cmd) <= 1:
        return f"command: `{meta.get('command', '?')}`"
    return "commands: " + "; ".join(
        f"`{cmd}` ({', '.join(tasks)})" for cmd, tasks in by_cmd.items()
    )


def _selection_text(cfg: dict) -> str:
    sel = cfg.get("selection", {})
    if sel.get("mode") == "tuned":
        return f"read from `{sel.get('file')}`, written by the tune profile"
    return (
        f"in every run, validation fraction {sel.get('val_fraction', 0.2)}, grid {sel.get('grid')}"
    )


def render_report(results: dict, out_dir: str | Path) -> Path:
    """Write ``report.md`` (and every task's PNGs) into ``out_dir``; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = results.get("meta", {})
    parts = [
        "# HEM benchmark report",
        f"Profile `{meta.get('profile', '?')}`, seeds {meta.get('seeds')}, device "
        f"`{meta.get('device', 'cpu')}`, torch {meta.get('torch', '?')}; "
        f"{commands_text(meta)}; {meta.get('finished', '')}.",
        "Each result is mean ± std over the seeds. Beside each result: the paper's claim "
        "(Spratling & Schütt, arXiv:2501.12191) and whether this measurement agrees. The "
        "runs of two losses are paired by seed: **agrees** / **disagrees** only when the 95 % "
        "t-interval of the paired difference (Δ [low, high], in points) excludes 0 on one "
        "side, else **no difference measured**. Learning rates (and LogitNorm's temperature) "
        "were chosen on validation splits carved from the training data, never on the test "
        "split (each task's selection table). A run that did not reach the profile's training "
        "accuracy, or diverged, is *unhealthy* (⚠) and no verdict is drawn from it: the line "
        "says **not decided** and why. These are small models on small data: they test the "
        "direction of the paper's claims, not its numbers.",
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
            f"{cfg['train'].get('schedule')} schedule over all steps; initial lr chosen per task, "
            f"dataset and loss on validation data (selection {_selection_text(cfg)}); "
            f"per-dataset overrides {cfg.get('dataset_train')}. Health: final training accuracy "
            f">= {cfg.get('min_train_acc', 0.95)} (tasks may set their own). Seeds: data "
            f"{cfg.get('data_seed', 'run')}, initialisation {cfg.get('init_seed', 'run')} "
            "('run': the run's seed). "
            f"Margins: `margin_for_dataset(n_train, scale={lo.get('margin_scale', 2000.0):g})` for "
            "MM, HEM and HEM without threshold; `class_margins(class counts)` for HEM+. "
            f"LogitNorm temperature {lo.get('logitnorm_temperature', 0.04)}; logit-adjusted "
            f"tau {lo.get('logit_adjusted_tau', 1.0)}. Each task's section lists its own "
            "settings and the margins used.",
        ]
    timing = meta.get("task_seconds", {})
    if timing:
        parts.append(timing_text(meta))
    for name, res in ordered_tasks(results):
        task = TASKS.get(name)
        if task is None:
            parts.append(f"## {name}\n\n(no renderer registered for task {name!r})")
            continue
        parts.append(task.render(res, out))
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def claims_table(results: dict) -> str:
    """One row per paper's claim and dataset: the measured means, the paired difference
    with its 95 % interval, and the verdict (from every task's ``summary``)."""
    rows = []
    for name, res in ordered_tasks(results):
        task = TASKS.get(name)
        if task is None:
            continue
        for claim, cells in task.summary(res):
            for ds, cell in cells.items():
                rows.append([claim, ds, cell])
    return md_table(
        ["paper's claim", "data", "ours vs rival (%), paired Δ [95 % CI]: verdict"], rows
    )


README_START = "<!-- benchmark-results:start -->"
README_END = "<!-- benchmark-results:end -->"
#: A shorter block (the claims table alone) for the README's front page.
HEADLINE_START = "<!-- benchmark-headline:start -->"
HEADLINE_END = "<!-- benchmark-headline:end -->"


def _rendered_note(json_path: str, targets: tuple[str, ...]) -> str:
    return (
        f"<!-- rendered from {json_path} by `python tools/benchmark.py --render {json_path} "
        f"--readme {' '.join(targets)}`; edit the JSON's run, not this block -->"
    )


def readme_block(results: dict, json_path: str, targets: tuple[str, ...] = ("README.md",)) -> str:
    """The benchmark results: the claims table and the headline tables, rendered from
    ``results`` (the committed ``json_path``) with the command that does it."""
    meta = results.get("meta", {})

    first = results.get("headline_dataset")
    others = [d for d in (results.get("config") or {}).get("datasets", []) if d != first]
    parts = [
        README_START,
        _rendered_note(json_path, targets),
        f"Profile `{meta.get('profile')}`, seeds {meta.get('seeds')}, {meta.get('finished', '')}; "
        f"{commands_text(meta)}. {timing_text(meta)} (One thread per run; CPU time is what "
        "the run costs on an idle machine.)",
        claims_table(results),
    ]
    for ds in [first, *others]:
        parts += [f"Headline, dataset `{ds}` (⚠: a group with an unhealthy run):",
                  headline_table(results, ds)]  # fmt: skip
    parts.append(README_END)
    return "\n\n".join(parts)


def headline_block(results: dict, json_path: str, targets: tuple[str, ...] = ("README.md",)) -> str:
    """The README's short block: the claims table, its profile and seeds."""
    meta = results.get("meta", {})
    return "\n\n".join([
        HEADLINE_START,
        _rendered_note(json_path, targets),
        f"Profile `{meta.get('profile')}`, seeds {meta.get('seeds')}, {meta.get('finished', '')}:",
        claims_table(results),
        HEADLINE_END,
    ])  # fmt: skip


def task_section(results: dict, name: str, json_path: str, doc: Path) -> str:
    """Task ``name``'s report section for a page at ``doc``: rendered from ``results`` (the
    committed ``json_path``), its plots linked where the report keeps them, its own
    heading left to the page."""
    import re

    if name not in results.get("tasks", {}) or name not in TASKS:
        raise ValueError(f"{json_path} has no results of task {name!r} to render into {doc}")
    report_dir = Path(json_path).parent
    text = TASKS[name].render(results["tasks"][name], report_dir)
    text = re.sub(r"\A## [^\n]*\n+", "", text)  # the page has its own heading

    def link(m: re.Match) -> str:
        target = Path(os.path.relpath(report_dir / m.group(2), doc.resolve().parent))
        return f"{m.group(1)}({target.as_posix()})"

    return re.sub(r"(!\[[^\]]*\])\(([^)/]+\.png)\)", link, text)


def render_readme(
    results: dict, readme: str | Path, json_path: str, targets: tuple[str, ...] | None = None
) -> Path:
    """Replace the blocks between the benchmark markers in ``readme`` that ``results`` has
    data for: the full block (:func:`readme_block`) and the short one (:func:`headline_block`)
    when it holds one of the paper's tasks (:data:`.tasks.PAPER_TASKS`: the quick profile's),
    any task section (``<!-- task-section:NAME:start -->``, :func:`task_section`) when it
    holds that task. The other blocks stay as they are (another JSON fills them: the beyond
    profile's fills the sections of the tasks beyond the paper).

    ``targets``: every file the command renders (named in the block's note).

    Raises:
        ValueError: ``readme`` has no block, or none that ``results`` has data for.
    """
    import re

    readme = Path(readme)
    targets = targets or (str(readme),)
    text = readme.read_text(encoding="utf-8")
    blocks = (
        (README_START, README_END, readme_block),
        (HEADLINE_START, HEADLINE_END, headline_block),
    )
    claims = any(t in results.get("tasks", {}) for t in PAPER_TASKS)
    found = False
    skipped: list[str] = []
    for start, end, build in blocks:
        if start in text and end in text:
            if not claims:
                skipped.append("the paper's claims")
                continue
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + build(results, json_path, targets) + tail
            found = True
    for name in re.findall(r"<!-- task-section:([\w-]+):start -->", text):
        start, end = f"<!-- task-section:{name}:start -->", f"<!-- task-section:{name}:end -->"
        if name not in results.get("tasks", {}):
            skipped.append(f"task {name!r}")
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        body = task_section(results, name, json_path, readme)
        text = f"{head}{start}\n{_rendered_note(json_path, targets)}\n\n{body}\n{end}{tail}"
        found = True
    if not found and skipped:
        raise ValueError(
            f"{json_path} has no results of {', '.join(skipped)} to render into {readme}"
        )
    if not found:
        raise ValueError(
            f"{readme} has no {README_START} ... {README_END} or {HEADLINE_START} ... "
            f"{HEADLINE_END} block to fill"
        )
    readme.write_text(text, encoding="utf-8")
    return readme


def fill_block(path: str | Path, name: str, text: str) -> Path:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` in
    ``path`` with ``text`` (a figure rendered from committed JSON)."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text(encoding="utf-8")
    if start not in doc or end not in doc:
        raise ValueError(f"{path} has no {start} ... {end} block to fill")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")
    return path


def render_from_json(json_path: str | Path, out_dir: str | Path | None = None) -> Path:
    json_path = Path(json_path)
    results = json.loads(json_path.read_text(encoding="utf-8"))
    return render_report(results, out_dir or json_path.parent)
