"""Run a profile: every task over every seed, then ``results.json`` and ``report.md``."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import torch

from .config import task_settings
from .protocol import tuned_from_results
from .report import render_report
from .tasks import TASKS
from .tasks.base import Context


def run_benchmark(
    cfg: dict,
    out_dir: str | Path,
    tasks: list[str] | None = None,
    seeds: list[int] | None = None,
    device: str = "cpu",
    data_root: str | None = None,
    command: str = "",
    progress: bool = True,
    update: bool = False,
) -> dict:
    """Run ``tasks`` (default: every task the config and the registry both have).

    With ``update``, the tasks run are merged into the ``results.json`` already in
    ``out_dir`` (same profile and seeds; its other tasks stay as they were, and
    ``meta.task_commands`` says which command produced each task), and the report is
    rendered from the merged results.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tasks or [t for t in TASKS if t in cfg.get("tasks", {})
                      and t in cfg.get("only_tasks", TASKS)]  # fmt: skip
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available: {list(TASKS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for but torch.cuda.is_available() is False")
    seeds = [int(s) for s in (seeds if seeds is not None else cfg.get("seeds", [0]))]
    settings = {t: task_settings(cfg, t) for t in names}
    for t in names:
        settings[t]["seeds"] = seeds
    total = sum(TASKS[t].units(settings[t]) for t in names) * len(seeds)

    results = {
        "meta": {
            "profile": cfg.get("profile"),
            "seeds": seeds,
            "device": device,
            "torch": torch.__version__,
            "command": command,
            "task_seconds": {},
            "task_cpu_seconds": {},
            "task_commands": {},
        },
        "headline_dataset": cfg.get("headline_dataset"),
        "config": cfg,
        "tasks": {},
    }
    if update:
        results = _previous_results(out / "results.json", results)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<60}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        job = bar.add_task("benchmark", total=total)
        ctx = Context(device=device, data_root=data_root, work_dir=out,
                      advance=lambda desc: bar.update(job, advance=1, description=desc))  # fmt: skip
        for name in names:
            task, start, cpu = TASKS[name], time.perf_counter(), time.process_time()
            res = {"settings": settings[name], "seeds": seeds, "per_seed": {}}
            for seed in seeds:
                res["per_seed"][str(seed)] = task.run_seed(settings[name], seed, ctx)
            results["tasks"][name] = res
            results["meta"]["task_seconds"][name] = time.perf_counter() - start
            # CPU time of this process: the wall time on an idle machine (one thread), however
            # busy the machine was during this run.
            results["meta"]["task_cpu_seconds"][name] = time.process_time() - cpu
            results["meta"]["task_commands"][name] = command
            # Written after every task: a crash later keeps what was measured.
            (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["meta"]["finished"] = datetime_now()
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    if cfg.get("write_tuned"):
        write_tuned(results, Path(cfg["write_tuned"]), command)
    render_report(results, out)
    return results


def _previous_results(path: Path, fresh: dict) -> dict:
    """The results in ``path``, checked to come from the same profile and seeds as ``fresh``,
    with ``fresh``'s meta and config; tasks are then replaced one by one as they run."""
    if not path.is_file():
        raise FileNotFoundError(f"--update needs an earlier run's {path}")
    old = json.loads(path.read_text(encoding="utf-8"))
    for key in ("profile", "seeds"):
        if old["meta"].get(key) != fresh["meta"][key]:
            raise ValueError(
                f"--update: {path} has {key} {old['meta'].get(key)!r}, this run "
                f"{fresh['meta'][key]!r}; results of different {key}s do not mix"
            )
    merged = {**fresh, "tasks": dict(old["tasks"])}
    merged["meta"]["task_seconds"] = dict(old["meta"].get("task_seconds", {}))
    merged["meta"]["task_cpu_seconds"] = dict(old["meta"].get("task_cpu_seconds", {}))
    merged["meta"]["task_commands"] = {
        t: old["meta"].get("task_commands", {}).get(t, old["meta"].get("command", ""))
        for t in old["tasks"]
    }
    return merged


def write_tuned(results: dict, path: Path, command: str) -> Path:
    """Write every selection of ``results`` (averaged over its seeds) into the tuned file that
    profiles with ``selection = dict(mode="tuned")`` read. The tasks of ``results`` replace
    their entries; other tasks' entries in an existing file stay, with the command that
    wrote them."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tuned = old.get("tuned", {})
    commands = {t: c for t, c in old.get("commands", {}).items() if t in tuned}
    written = datetime_now()
    for task, entries in tuned_from_results(results).items():
        tuned[task] = entries
        commands[task] = f"{command} ({written})"
    data = {
        "about": "Hyper-parameters chosen on validation splits carved from the training data "
        "(never the test split), mean validation score over the seeds; written by the command "
        "below. Profiles with selection.mode='tuned' read it.",
        "commands": commands,
        "tuned": tuned,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def datetime_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
