#!/usr/bin/env python
"""The benchmark suite from a checkout: ``python -m hem_plugins.benchmark``'s command line.

    python tools/benchmark.py --profile smoke --out /tmp/bench
    python tools/benchmark.py --render benchmarks/quick/results.json --readme README.md

Every flag is :mod:`hem_plugins.benchmark.cli`'s (``--help``).
"""

from __future__ import annotations

import sys

from hem_plugins.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python tools/benchmark.py"))
