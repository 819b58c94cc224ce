"""Run a profile: every task over every seed, then ``results.json`` and ``report.md``.

The terminal shows the progress bar (plain progress lines when stdout is not a
terminal), one line per finished task and where the report is; everything the
toolkits print or warn while the tasks run goes to ``benchmark.log`` in the
work folder (:func:`default_work_dir`: ``work_dirs/benchmark/<profile>/runs``), which
also holds the runs' own folders (mmseg and Avalanche work dirs). The output folder
holds the results alone: ``results.json``, ``report.md`` and the plots.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch

from .config import profile_tasks, task_settings
from .progress import ProgressDisplay
from .protocol import drop_shared, tuned_from_results
from .provenance import provenance
from .report import render_report
from .tasks import TASKS
from .tasks.base import Context, Task


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
    keep_checkpoints: bool = False,
    jobs: int = 1,
    threads: int = 1,
    work_dir: str | Path | None = None,
) -> dict:
    """Run ``tasks`` (default: every task the config and the registry both have).

    ``jobs`` > 1 runs the (task, seed) units in that many worker processes (each with
    ``threads`` torch threads), the most expensive tasks first; a unit's records do not
    depend on the process it ran in (every run seeds itself), so the results are those of
    ``jobs=1``, in the same order.

    With ``update``, the tasks run are merged into the ``results.json`` already in
    ``out_dir`` (same profile and seeds; its other tasks stay as they were, and
    ``meta.task_commands`` says which command produced each task, ``meta.task_content_hash``
    from which code and configs), and the report is rendered from the merged results.

    ``results["provenance"]`` is :func:`.provenance.provenance` of the tree this run ran from
    (tuned.json among the hashed files when the profile reads it).

    ``work_dir``: the folder of the runs' work dirs and ``benchmark.log`` (default
    :func:`default_work_dir`), so that ``out_dir`` holds only results.json, report.md and
    the plots.

    ``progress``: a bar on a terminal, plain lines when stdout is not one
    (:class:`.progress.ProgressDisplay`). ``keep_checkpoints``: the mmseg runs keep their
    final checkpoint in their work dir (by default they write none; their metrics come from
    the model in memory either way).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tasks or profile_tasks(cfg)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available: {list(TASKS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for but torch.cuda.is_available() is False")
    seeds = [int(s) for s in (seeds if seeds is not None else cfg.get("seeds", [0]))]
    settings = {t: task_settings(cfg, t) for t in names}
    runs = Path(work_dir) if work_dir is not None else default_work_dir(cfg)
    runs.mkdir(parents=True, exist_ok=True)
    for t in names:
        settings[t]["seeds"] = seeds
    total = sum(TASKS[t].units(settings[t]) for t in names) * len(seeds)
    # tuned.json decides the results only of a profile that reads it (not of the tune profile)
    prov = provenance(with_tuned="tuned" in cfg)

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
            "task_content_hash": {},
        },
        "provenance": prov,
        "headline_dataset": cfg.get("headline_dataset"),
        "config": cfg,
        "tasks": {},
    }
    results["meta"]["jobs"] = int(jobs)
    if update:
        results = _previous_results(out / "results.json", results)
    if jobs > 1:
        wall = time.perf_counter()
        with ProgressDisplay(total, enabled=progress) as display:
            _run_parallel(names, settings, seeds, results, out, command, prov, display,
                          runs=runs, device=device, data_root=data_root,
                          keep_checkpoints=keep_checkpoints, jobs=int(jobs),
                          threads=int(threads))  # fmt: skip
        results["meta"]["wall_seconds"] = time.perf_counter() - wall
        return _finish(results, out, cfg, command, names)
    with ProgressDisplay(total, enabled=progress) as display:
        ctx = Context(device=device, data_root=data_root, work_dir=runs,
                      advance=display.advance, keep_checkpoints=keep_checkpoints)  # fmt: skip
        for name in names:
            task, start, cpu = TASKS[name], time.perf_counter(), time.process_time()
            res = {"settings": settings[name], "seeds": seeds, "per_seed": {}}
            with output_to_log(runs / LOG_NAME):
                for seed in seeds:
                    res["per_seed"][str(seed)] = task.run_seed(settings[name], seed, ctx)
            # CPU time of this process: the wall time on an idle machine (one thread), however
            # busy the machine was during this run.
            _record_task(results, out, name, res, time.perf_counter() - start,
                         time.process_time() - cpu, command, prov, display)  # fmt: skip
    return _finish(results, out, cfg, command, names)


def _record_task(
    results: dict,
    out: Path,
    name: str,
    res: dict,
    seconds: float,
    cpu_seconds: float,
    command: str,
    prov: dict,
    display: ProgressDisplay,
) -> None:
    """A finished task into ``results``: its result, its wall and CPU seconds, the command and
    the content hash it came from; then results.json is written (after every task: a crash
    later keeps what was measured) and the task's line shown."""
    summarize = getattr(TASKS[name], "aggregate_result", None)
    if summarize is not None:  # what a task keeps over its seeds (margin_scaling's fit)
        res["aggregate"] = summarize(res)
    results["tasks"][name] = res
    results["meta"]["task_seconds"][name] = seconds
    results["meta"]["task_cpu_seconds"][name] = cpu_seconds
    results["meta"]["task_commands"][name] = command
    results["meta"]["task_content_hash"][name] = prov["content_hash"]
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    display.line(task_line(TASKS[name], res, seconds))


def _finish(results: dict, out: Path, cfg: dict, command: str, names: list[str]) -> dict:
    results["meta"]["finished"] = datetime_now()
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    if cfg.get("write_tuned"):
        write_tuned(results, Path(cfg["write_tuned"]), command, ran=names)
    render_report(results, out)
    return results


#: The order in which ``jobs > 1`` starts the tasks' units: the longest first, so that the
#: workers finish together (tasks not named here come after, in the profile's order).
LONGEST_FIRST = ("segmentation", "adaptive_margins", "lr_sensitivity", "divisor", "continual",
                 "margin_scaling", "openset", "adversarial", "skip_settled", "imbalanced", "ablation")  # fmt: skip


def _run_unit(name: str, settings: dict, seed: int, ctx_kwargs: dict, threads: int, log: str):
    """One (task, seed) unit in a worker process: ``(per-seed result, wall s, CPU s)``."""
    torch.set_num_threads(threads)
    ctx = Context(advance=lambda *_: None, **ctx_kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    with output_to_log(Path(log)):
        res = TASKS[name].run_seed(settings, seed, ctx)
    return res, time.perf_counter() - start, time.process_time() - cpu


def _run_parallel(names, settings, seeds, results, out, command, prov, display, *, runs,
                  device, data_root, keep_checkpoints, jobs, threads) -> None:  # fmt: skip
    """Every (task, seed) unit in ``jobs`` spawned processes; a task enters ``results`` (and
    results.json is written) when its last seed is done."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    rank = {t: i for i, t in enumerate(LONGEST_FIRST)}
    order = sorted(names, key=lambda t: rank.get(t, len(rank) + names.index(t)))
    ctx_kwargs = dict(device=device, data_root=data_root, work_dir=runs,
                      keep_checkpoints=keep_checkpoints)  # fmt: skip
    done: dict[str, dict] = {t: {} for t in names}
    spent: dict[str, list[float]] = {t: [0.0, 0.0] for t in names}
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        futures = {
            pool.submit(
                _run_unit, t, settings[t], seed, ctx_kwargs, threads, str(runs / LOG_NAME)
            ): (t, seed)  # fmt: skip
            for t in order
            for seed in seeds
        }
        for fut in as_completed(futures):
            name, seed = futures[fut]
            res, wall, cpu = fut.result()
            done[name][str(seed)] = res
            spent[name][0] += wall
            spent[name][1] += cpu
            task = TASKS[name]
            display.advance(f"{name} seed {seed}", task.units(settings[name]))
            if len(done[name]) < len(seeds):
                continue
            res = {"settings": settings[name], "seeds": seeds,
                   "per_seed": {str(s): done[name][str(s)] for s in seeds}}  # fmt: skip
            # the units' own wall and CPU seconds, summed (they ran beside other units)
            _record_task(results, out, name, res, spent[name][0], spent[name][1], command, prov,
                         display)  # fmt: skip
    # the registry's order, whatever order the units finished in
    results["tasks"] = {t: results["tasks"][t] for t in [*names, *results["tasks"]]
                        if t in results["tasks"]}  # fmt: skip


LOG_NAME = "benchmark.log"


def default_work_dir(cfg: dict) -> Path:
    """The folder of a profile's runs (their work dirs, ``benchmark.log``):
    ``work_dirs/benchmark/<profile>/runs`` under the current folder, whatever ``--out`` is
    (committed results under benchmarks/ keep no run folders beside them)."""
    return Path("work_dirs") / "benchmark" / str(cfg.get("profile") or "custom") / "runs"


@contextlib.contextmanager
def output_to_log(path: Path) -> Iterator[TextIO]:
    """Send what the toolkits print, warn and log while the block runs to ``path`` (appended).

    ``sys.stdout`` / ``sys.stderr`` are redirected (mmengine's loggers and Avalanche's
    progress bars made inside the block write there), warnings are shown there, and
    the root logger's records go there. The previous state comes back on exit.
    """
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        root = logging.getLogger()
        root.addHandler(handler)
        show = warnings.showwarning
        warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: log.write(
            warnings.formatwarning(msg, cat, fn, ln, line)
        )
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield log
        finally:
            warnings.showwarning = show
            root.removeHandler(handler)
            _detach_loggers(log)


def _detach_loggers(stream: TextIO) -> None:
    """Drop handlers that still write to ``stream`` (about to close): mmengine keeps its
    loggers for the life of the process, with the stream they were made with."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in list(getattr(logger, "handlers", [])):
            if getattr(h, "stream", None) is stream:
                logger.removeHandler(h)


def task_line(task: Task, result: dict, seconds: float) -> str:
    """One line for the terminal when a task is done: its verdict counts and its time."""
    counts: dict[str, int] = {}
    for _claim, cells in task.summary(result):
        for cell in cells.values():
            for word in ("disagrees", "agrees", "no difference", "not decided"):
                if word in cell:
                    counts[word] = counts.get(word, 0) + 1
                    break
    said = ", ".join(f"{n} {w}" for w, n in counts.items()) or "done"
    return f"{task.title}: {said} ({seconds:.0f} s)"


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
    # None: results from before provenance was recorded (the hash they came from is unknown)
    old_hash = (old.get("provenance") or {}).get("content_hash")
    merged["meta"]["task_content_hash"] = {
        t: old["meta"].get("task_content_hash", {}).get(t, old_hash) for t in old["tasks"]
    }
    return merged


def write_tuned(results: dict, path: Path, command: str, ran: list[str] | None = None) -> Path:
    """Write every selection of ``results`` (averaged over its seeds) into the tuned file that
    profiles with ``selection = dict(mode="tuned")`` read.

    The tasks this run ran (``ran``; default: every task of ``results``) replace their
    entries, each with ``command`` and this tree's content hash. A task ``results`` holds
    because ``--update`` merged it from an earlier run keeps the entry the file has (written
    by that run or a later one); where the file has none, it is written from ``results``
    with the command and the content hash that produced it. Other tasks' entries stay with
    the command and hash that wrote them. ``provenance`` is this run's, without tuned.json
    (the tune profile does not read it); ``content_hashes`` says per task what each entry
    came from.
    """
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tuned = old.get("tuned", {})
    commands = {t: c for t, c in old.get("commands", {}).items() if t in tuned}
    hashes = {t: h for t, h in old.get("content_hashes", {}).items() if t in tuned}
    meta = results.get("meta", {})
    ran_now = set(results.get("tasks", {}) if ran is None else ran)
    prov = results.get("provenance")
    if not prov or prov.get("with_tuned", True):
        prov = provenance(with_tuned=False)
    written = datetime_now()
    for task, entries in tuned_from_results(results).items():
        if task in ran_now:
            tuned[task] = entries
            commands[task] = f"{command} ({written})"
            hashes[task] = prov["content_hash"]
        elif task not in tuned:  # merged in by --update, and not in the file
            tuned[task] = entries
            earlier = meta.get("task_commands", {}).get(task) or "an earlier run"
            commands[task] = f"{earlier} (merged by --update into the results of `{command}`)"
            hashes[task] = meta.get("task_content_hash", {}).get(task)
    # a setting selected by a task and by its owner (protocol.SELECTION_OWNERS) keeps the
    # owner's entry alone, also when the two were tuned by different commands
    tuned = drop_shared(tuned)
    commands = {t: c for t, c in commands.items() if t in tuned}
    hashes = {t: h for t, h in hashes.items() if t in tuned}
    data = {
        "about": "Hyper-parameters chosen on validation splits carved from the training data "
        "(never the test split), mean validation score over the seeds; written by the commands "
        "below (content_hashes: the code and configs each task's entry came from, see "
        "hem_plugins/benchmark/provenance.py). Profiles with selection.mode='tuned' read it.",
        "provenance": prov,
        "commands": commands,
        "content_hashes": hashes,
        "tuned": tuned,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def datetime_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
