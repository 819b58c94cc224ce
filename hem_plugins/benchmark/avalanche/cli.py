"""The command line of ``tools/continual.py``: run one continual-learning config.

    python tools/continual.py configs/avalanche/replay_hem_splitdigits.py \\
        [--cfg-options optimizer.lr=0.05 strategy.train_epochs=5] [--work-dir DIR] [--json]

:func:`main` prints one line per experience and a short summary of
:func:`~hem_plugins.benchmark.avalanche.runner.run` (``--json``: the summary as JSON,
without the config and the margins); ``DIR/summary.json`` holds all of it and
``DIR/log.txt`` the full log. It returns the exit status: 0, 2 for a bad config or a
missing file, 3 when training diverged.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmengine.config import DictAction

from .registry import ConfigError
from .runner import LOG_NAME, DivergedError, load_config, resolve_work_dir, run

__all__ = ["main"]

DESCRIPTION = "Run a continual-learning experiment from a config: ``tools/continual.py CONFIG``."


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the config, print its progress and
    summary."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("config", help="mmengine config file (configs/avalanche/*.py)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default=None,
        help="override config entries, e.g. optimizer.lr=0.05 strategy.train_epochs=5",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="logs and summary.json go here (default work_dirs/<config name>)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a short one"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
        work_dir = resolve_work_dir(cfg, args.work_dir)
        summary = run(cfg, work_dir=work_dir, progress=lambda line: print(line, flush=True))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if args.json:
        shown = {k: v for k, v in summary.items() if k not in ("config", "margins")}
        print(json.dumps(shown, indent=2))
    else:
        print(short_summary(summary, work_dir / LOG_NAME))
    return 0


def short_summary(summary: dict, log) -> str:
    """Two lines: the final figures of each evaluated stream and the run's time, then
    where the summary and the log are."""
    parts = []
    for name, res in summary["streams"].items():
        n = len(res["experience_accuracies"])
        words = [f"final {name} acc {res['final_accuracy']:.3f} (mean over {n} experiences)"]
        for key in ("forgetting", "bwt"):
            if res[key] is not None:
                words.append(f"{'BWT' if key == 'bwt' else key} {res[key]:+.3f}")
        parts.append(", ".join(words))
    figures = "; ".join(parts) + f"; train acc {summary['train_accuracy']:.3f}"
    where = f"summary: {summary['work_dir']}/summary.json"
    if log.is_file():
        where += f", full log: {log}"
    return f"{figures} ({summary['seconds']:.0f} s)\n{where}"
