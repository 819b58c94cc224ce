"""Run a profile: every task over every seed, then ``results.json`` and ``report.md``."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import torch

from .config import task_settings
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
) -> dict:
    """Run ``tasks`` (default: every task the config and the registry both have)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tasks or [t for t in TASKS if t in cfg.get("tasks", {})]
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
        },
        "headline_dataset": cfg.get("headline_dataset"),
        "config": cfg,
        "tasks": {},
    }
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
            task, start = TASKS[name], time.perf_counter()
            res = {"settings": settings[name], "seeds": seeds, "per_seed": {}}
            for seed in seeds:
                res["per_seed"][str(seed)] = task.run_seed(settings[name], seed, ctx)
            results["tasks"][name] = res
            results["meta"]["task_seconds"][name] = time.perf_counter() - start
            # Written after every task: a crash later keeps what was measured.
            (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["meta"]["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    render_report(results, out)
    return results
