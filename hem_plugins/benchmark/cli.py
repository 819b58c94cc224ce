"""The benchmark suite's command line: ``python -m hem_plugins.benchmark`` (and ``tools/benchmark.py``).

Trains and evaluates each loss on each task (a profile of ``configs/benchmark/``,
shipped with the package) over several seeds and writes ``report.md``, PNG plots and
``results.json`` into ``--out``; the runs' work dirs and ``benchmark.log`` (every
third-party message) go to ``--work-dir`` (default ``work_dirs/benchmark/<profile>/runs``).

    python -m hem_plugins.benchmark                       # quick profile -> work_dirs/benchmark/quick
    python -m hem_plugins.benchmark --profile smoke --out /tmp/bench
    python -m hem_plugins.benchmark --tasks openset,adversarial --seeds 0 1
    python -m hem_plugins.benchmark --device cuda --profile full
    python -m hem_plugins.benchmark --datasets mnist --data-root ~/data   # torchvision files
    python -m hem_plugins.benchmark --render work_dirs/benchmark/quick/results.json  # report only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

PROG = "python -m hem_plugins.benchmark"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--profile",
        default="quick",
        help="smoke, quick, beyond, tune, full, or a path to a .py config",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default work_dirs/benchmark/<profile>)"
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="folder of the runs' work dirs and benchmark.log "
        "(default work_dirs/benchmark/<profile>/runs; --out keeps the results alone)",
    )
    p.add_argument("--tasks", default=None, help="comma-separated subset of the tasks")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="override the profile's seeds"
    )
    p.add_argument("--datasets", default=None, help="comma-separated datasets for every task")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--data-root", default=None, help="folder with MNIST / CIFAR files (torchvision layout)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads on the CPU (default 1: the models are small, and more "
        "threads only spin on a shared machine)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes for the (task, seed) units (default 1; `make bench` uses 2, "
        "one per core of a 2-core machine); the results do not depend on it",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (default: a bar on a terminal, plain lines when stdout is not one)",
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="the mmseg runs keep their final checkpoint (iter_N.pth) in their work dirs; "
        "by default they write none",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="merge the tasks run into --out's existing results.json (same profile and seeds)",
    )
    p.add_argument("--render", default=None, metavar="RESULTS_JSON", help="only re-render a report")
    p.add_argument(
        "--readme",
        nargs="+",
        default=None,
        metavar="MARKDOWN",
        help="with --render: also fill these files' benchmark blocks that RESULTS_JSON has "
        "results for (in a checkout: benchmarks/quick/results.json into README.md "
        "docs/benchmarks.md; benchmarks/beyond/results.json into docs/divisor.md "
        "docs/adaptive_margins.md docs/skip_settled.md docs/margin_scaling.md "
        "docs/anomaly_segmentation.md docs/settled_rule.md)",
    )
    return p.parse_args(argv)


def main(argv=None, prog: str = PROG) -> int:
    """Run the command line; the exit status (2: bad settings or missing data, said on stderr)."""
    args = parse_args(argv, prog)
    from .report import render_from_json, render_readme

    if args.render:
        path = render_from_json(args.render, args.out)
        print(f"report: {path}")
        if args.readme:
            results = json.loads(Path(args.render).read_text(encoding="utf-8"))
            shown = os.path.relpath(Path(args.render).resolve())
            for doc in args.readme:
                print(f"rendered: {render_readme(results, doc, shown, tuple(args.readme))}")
        return 0
    if args.readme:
        print("error: --readme needs --render RESULTS_JSON", file=sys.stderr)
        return 2

    import torch

    from .config import load_profile
    from .data import DATASETS
    from .runner import LOG_NAME, default_work_dir, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_profile(args.profile)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.datasets:
        ds = [d.strip() for d in args.datasets.split(",") if d.strip()]
        bad = [d for d in ds if d not in DATASETS]
        if bad:
            print(f"error: unknown dataset(s) {bad}; choose from {list(DATASETS)}", file=sys.stderr)
            return 2
        cfg["datasets"] = ds
        for t in cfg["tasks"].values():
            t.pop("datasets", None)
            t.pop("known_classes", None)  # open set: the first 60 % of each dataset's classes
        cfg["headline_dataset"] = ds[-1]
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    out = Path(args.out or Path("work_dirs") / "benchmark" / cfg["profile"])
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(cfg)
    given = argv if argv is not None else sys.argv[1:]
    command = f"{prog} " + " ".join(shlex.quote(a) for a in given)
    try:
        run_benchmark(cfg, out, tasks=tasks, seeds=args.seeds, device=args.device,
                      data_root=args.data_root, command=command.strip(),
                      progress=not args.no_progress, update=args.update,
                      keep_checkpoints=args.keep_checkpoints, jobs=max(1, args.jobs),
                      threads=args.threads or 1, work_dir=work_dir)  # fmt: skip
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        # Bad settings or missing data: say what is wrong, without a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'}  (third-party messages: {work_dir / LOG_NAME})")
    return 0
