#!/usr/bin/env python
"""Run a continual-learning experiment from a config: ``tools/continual.py CONFIG``.

    python tools/continual.py configs/avalanche/replay_hem_splitdigits.py \\
        [--cfg-options optimizer.lr=0.05 strategy.train_epochs=5] [--work-dir DIR]

Prints and writes ``DIR/summary.json``. Programmatic use (what ``main`` does)::

    from hem_plugins.benchmark.avalanche.runner import run   # also importable from this file
    summary = run('configs/avalanche/replay_hem_splitdigits.py',
                  cfg_options={'seed': 1}, work_dir='work_dirs/x')
    summary['final_accuracy'], summary['forgetting'], summary['experience_accuracies'],
    summary['margins']

``run(config, cfg_options=None, work_dir=None) -> dict`` takes a config path,
an mmengine ``Config`` or a dict; see :func:`hem_plugins.benchmark.avalanche.runner.run`
for the summary's keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmengine.config import DictAction

from hem_plugins.benchmark.avalanche.registry import ConfigError
from hem_plugins.benchmark.avalanche.runner import DivergedError, run

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="mmengine config file (configs/avalanche/*.py)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default=None,
        help="override config entries, e.g. optimizer.lr=0.05 strategy.train_epochs=5",
    )
    parser.add_argument("--work-dir", default=None, help="logs and summary.json go here")
    args = parser.parse_args(argv)
    try:
        summary = run(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    shown = {k: v for k, v in summary.items() if k not in ("config", "margins")}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
