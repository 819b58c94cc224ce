#!/usr/bin/env python
"""Time and memory of the HEM losses against cross-entropy, in one process.

The command line of :mod:`hem_plugins.benchmark.timing` (its docstring says what is
measured and how)::

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
    python tools/bench_loss.py --suite small --out benchmarks/bench_loss_small_cpu.json

The JSON written to ``--out`` also holds the tree's ``provenance``
(:func:`hem_plugins.benchmark.provenance.provenance`, without ``configs/benchmark/tuned.json``,
which no timing reads). ``tools/render_performance.py`` renders docs/performance.md's tables
from the committed JSONs.
"""

from __future__ import annotations

import json
import sys

from hem_plugins.benchmark.provenance import provenance
from hem_plugins.benchmark.timing.cli import main, parse_args


def add_provenance(argv: list[str] | None = None) -> None:
    """Put the tree's provenance into the JSON that a run with ``argv`` wrote (after ``meta``;
    the timing's writer, ``hem_plugins.benchmark.timing.report.write_json``, indents by 2).
    ``--profile`` writes no JSON."""
    _, args = parse_args(argv)
    if args.profile or args.peak_of:
        return
    data = json.loads(args.out.read_text(encoding="utf-8"))
    data = {"meta": data.pop("meta"), "provenance": provenance(with_tuned=False), **data}
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"provenance added to {args.out}")


if __name__ == "__main__":
    main()
    add_provenance(sys.argv[1:])
