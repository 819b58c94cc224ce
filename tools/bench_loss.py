#!/usr/bin/env python
"""Time and memory of the HEM losses against cross-entropy, in one process.

The command line of :mod:`hem_plugins.benchmark.timing` (its docstring says what is
measured and how)::

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
    python tools/bench_loss.py --suite small --out benchmarks/bench_loss_small_cpu.json

The JSON written to ``--out`` also holds the tree's ``provenance``
(:func:`hem_plugins.benchmark.provenance.provenance`, without ``configs/benchmark/tuned.json``,
which no timing reads; written by ``hem_plugins.benchmark.timing.report.write_json``).
``tools/render_performance.py`` renders docs/performance.md's tables from the committed JSONs.
"""

from __future__ import annotations

from hem_plugins.benchmark.timing.cli import main

if __name__ == "__main__":
    main()
