#!/usr/bin/env python
"""SkipSettledPlugin with no set-up, as a user adds it, against the same runs without it.

    python tools/skip_settled.py --seeds 0 1 2 3 4 5 6 7 8 9      # writes benchmarks/skip_settled_plain.json
    python tools/skip_settled.py --render benchmarks/skip_settled_plain.json --doc docs/skip_settled.md

Every flag is :mod:`hem_plugins.benchmark.settled_plain`'s (``--help``). A run (not
``--render``) also puts the tree's ``provenance`` into its JSON
(:func:`hem_plugins.benchmark.provenance.provenance`, without
``configs/benchmark/tuned.json``, which the runs do not read). The benchmark task
``skip_settled`` runs alone with ``python -m hem_plugins.benchmark --tasks skip_settled``.
"""

from __future__ import annotations

import json
import sys

from hem_plugins.benchmark.provenance import provenance
from hem_plugins.benchmark.settled_plain import main, parse_args

PROG = "python tools/skip_settled.py"


def add_provenance(argv: list[str]) -> None:
    """Put the tree's provenance into the JSON that a run with ``argv`` wrote (after its
    ``meta``; ``settled_plain`` writes with indent 1). ``--render`` writes no JSON."""
    args = parse_args(argv, PROG)
    if args.render is not None:
        return
    data = json.loads(args.json.read_text(encoding="utf-8"))
    data["provenance"] = provenance(with_tuned=False)
    args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"provenance added to {args.json}")


if __name__ == "__main__":
    code = main(prog=PROG)
    if code == 0:
        add_provenance(sys.argv[1:])
    sys.exit(code)
