#!/usr/bin/env python
"""Does skipping HEM-settled samples save training? The benchmark task ``skip_settled`` alone.

A thin CLI over :mod:`hem_plugins.benchmark.tasks.skip_settled` (the measurement
code is :mod:`hem_plugins.benchmark.settled_runs`, and for ``--plain``
:mod:`hem_plugins.benchmark.settled_plain`): it runs that task with the
settings of a benchmark profile (``configs/benchmark/<profile>.py``, key
``tasks.skip_settled``) and writes ``DIR/skip_settled.json`` (the task's
results, as ``results.json`` of ``tools/benchmark.py`` holds them),
``DIR/skip_settled.md`` (its report section) and ``DIR/skip_settled.png``.

    python tools/skip_settled.py --out work_dirs/skip_settled --profile quick
    python tools/skip_settled.py --out /tmp/s --profile smoke --no-continual
    python tools/skip_settled.py --render work_dirs/skip_settled/skip_settled.json

The same numbers come from ``tools/benchmark.py --profile quick --tasks skip_settled``.

``--plain`` measures instead the plugin with no set-up, as a user adds it:
``plugins=[ExperienceMarginsPlugin(), SkipSettledPlugin()]`` on a plain
``nc_benchmark`` of scikit-learn's digits (no ``with_sample_ids``), Naive and
Naive + ``ReplayPlugin``, against the same runs without it, over several seeds;
it writes a small JSON (default ``benchmarks/skip_settled_plain.json``)::

    python tools/skip_settled.py --plain --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--profile", default="quick", help="smoke, quick, full, or a .py config path")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--repeats", type=int, default=None, help="training seeds per seed")
    p.add_argument("--no-continual", action="store_true", help="leave out continual learning")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON", help="only re-render")
    p.add_argument(
        "--plain",
        action="store_true",
        help="SkipSettledPlugin() with no set-up on a plain nc_benchmark (see above)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "skip_settled_plain.json",
        help="--plain: the JSON to write",
    )
    p.add_argument("--epochs", type=int, default=10, help="--plain: epochs per experience")
    p.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="--plain: also fill the skip-plain table of this Markdown file "
        "(docs/skip_settled.md) from the JSON; with --render JSON, only that",
    )
    return p.parse_args(argv)


def plain_main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """``--plain``: :func:`hem_plugins.benchmark.settled_plain.plain_comparison`; writes
    ``args.json``."""
    import torch

    from hem_plugins.benchmark.settled_plain import plain_comparison

    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else [0, 1, 2, 3, 4]
    start = time.perf_counter()
    result = plain_comparison(seeds, args.epochs, log=lambda s: print(s, flush=True))
    result["meta"] = {
        "command": shlex.join(["python", "tools/skip_settled.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": args.threads,
        "seconds": time.perf_counter() - start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, r in result["strategies"].items():
        print(
            f"{name}: {100 * r['passes_saved']:.1f} % fewer sample passes "
            f"(min {100 * r['passes_saved_min']:.1f} %), final test accuracy "
            f"{r['acc_diff_points']:+.2f} points, just-trained accuracy "
            f"{r['acc_just_trained_diff_points']:+.2f} points (with minus without)"
        )
    return result


def render_plain(json_path: Path, doc: Path) -> None:
    """Fill ``doc``'s skip-plain block from a ``--plain`` JSON."""
    from hem_plugins.benchmark.report import fill_block
    from hem_plugins.benchmark.settled_plain import plain_table

    result = json.loads(json_path.read_text(encoding="utf-8"))
    text = f"<!-- rendered from {json_path} by `python tools/skip_settled.py --plain --render "
    text += f"{json_path} --doc {doc}` -->\n\n{plain_table(result)}\n"
    print(f"rendered: {fill_block(doc, 'skip-plain', text)}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.plain and args.render is not None:
        render_plain(args.render, args.doc or Path("docs/skip_settled.md"))
        return {"rendered": str(args.render)}
    if args.plain:
        result = plain_main(args, argv)
        if args.doc is not None:
            render_plain(args.json, args.doc)
        return result
    import torch

    from hem_plugins.benchmark.config import load_profile, task_settings
    from hem_plugins.benchmark.tasks.base import Context
    from hem_plugins.benchmark.tasks.skip_settled import TASK

    if args.render is not None:
        result = json.loads(args.render.read_text(encoding="utf-8"))
        out = args.out or args.render.parent
    else:
        if args.out is None:
            raise SystemExit("tools/skip_settled.py: --out DIR is required (or --render JSON)")
        torch.set_num_threads(args.threads)
        cfg = load_profile(args.profile)
        settings = task_settings(cfg, TASK.name)
        seeds = args.seeds if args.seeds is not None else cfg.get("seeds", [0])
        if args.repeats is not None:
            settings["repeats"] = args.repeats
        if args.no_continual:
            settings["continual"] = None
        settings["seeds"] = seeds
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = {"settings": settings, "seeds": seeds, "per_seed": {}}
        ctx = Context(work_dir=out, advance=lambda desc: print(desc, flush=True))
        for seed in seeds:
            result["per_seed"][str(seed)] = TASK.run_seed(settings, seed, ctx)
        result["meta"] = {
            "command": shlex.join(["python", "tools/skip_settled.py", *(argv or sys.argv[1:])]),
            "profile": cfg.get("profile"),
            "torch": torch.__version__,
            "threads": args.threads,
            "seconds": time.perf_counter() - start,
        }
        (out / "skip_settled.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = TASK.render(result, out)
    command = result.get("meta", {}).get("command")
    if command:
        text = text.replace("\n\n", f"\n\nCommand: `{command}`.\n\n", 1)
    (out / "skip_settled.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
