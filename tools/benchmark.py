#!/usr/bin/env python
"""The benchmark suite from a checkout: ``python -m hem_plugins.benchmark``'s command line.

    python tools/benchmark.py --profile smoke --out /tmp/bench
    python tools/benchmark.py --render benchmarks/quick/results.json --readme README.md

Every flag is :mod:`hem_plugins.benchmark.cli`'s (``--help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hem_plugins.benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python tools/benchmark.py"))
