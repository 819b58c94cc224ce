"""The command line of ``tools/continual.py``: run one continual-learning config.

    python tools/continual.py configs/avalanche/replay_hem_splitdigits.py \\
        [--cfg-options optimizer.lr=0.05 strategy.train_epochs=5] [--work-dir DIR]

:func:`main` prints the summary of :func:`~hem_plugins.benchmark.avalanche.runner.run`
(without the config and the margins, which ``DIR/summary.json`` holds) and
returns the exit status: 0, 2 for a bad config or a missing file, 3 when
training diverged.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmengine.config import DictAction

from .registry import ConfigError
from .runner import DivergedError, run

__all__ = ["main"]

DESCRIPTION = "Run a continual-learning experiment from a config: ``tools/continual.py CONFIG``."


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the config, print its summary."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
