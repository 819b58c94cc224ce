#!/usr/bin/env python
"""SkipSettledPlugin with no set-up, as a user adds it, against the same runs without it.

    python tools/skip_settled.py --seeds 0 1 2 3 4 5 6 7 8 9      # writes benchmarks/skip_settled_plain.json
    python tools/skip_settled.py --render benchmarks/skip_settled_plain.json --doc docs/skip_settled.md

Every flag is :mod:`hem_plugins.benchmark.settled_plain`'s (``--help``). A run (not
``--render``) writes the tree's ``provenance`` into its JSON
(:func:`hem_plugins.benchmark.provenance.provenance`, without
``configs/benchmark/tuned.json``, which the runs do not read). The benchmark task
``skip_settled`` runs alone with ``python -m hem_plugins.benchmark --tasks skip_settled``.
"""

from __future__ import annotations

import sys

from hem_plugins.benchmark.settled_plain import main

PROG = "python tools/skip_settled.py"

if __name__ == "__main__":
    sys.exit(main(prog=PROG))
