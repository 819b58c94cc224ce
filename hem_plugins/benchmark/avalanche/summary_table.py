"""A markdown table of ``tools/continual.py`` summaries: mean ± std over the runs of each config.

    python tools/continual_table.py work_dirs/readme/replay_*_seed*

Each argument is a work dir holding ``summary.json``; runs whose work dir
names differ only in a trailing ``_seed<k>`` are grouped into one row.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

__all__ = ["main", "table"]

DESCRIPTION = (
    "Markdown table of ``tools/continual.py`` summaries: mean ± std over runs of each config."
)


def _fmt(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def table(work_dirs: list[str]) -> str:
    """One row per config: criterion, number of runs, final accuracy and forgetting in %.

    Raises:
        FileNotFoundError: a work dir holds no ``summary.json``.
    """
    groups: dict[str, list[dict]] = {}
    for d in work_dirs:
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"no summary.json in {d}")
        name = re.sub(r"_seed\d+$", "", Path(d).name)
        groups.setdefault(name, []).append(json.loads(path.read_text()))
    rows = [
        "| run | criterion | runs | final accuracy (%) | forgetting (%) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        crit = runs[0]["config"]["criterion"]["type"]
        acc = _fmt([r["final_accuracy"] for r in runs])
        fgt = _fmt([r["forgetting"] for r in runs])
        rows.append(f"| {name} | {crit} | {len(runs)} | {acc} | {fgt} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the table of the work dirs in ``argv``; 2 when one has no summary."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("work_dirs", nargs="+")
    args = parser.parse_args(argv)
    try:
        print(table(args.work_dirs))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
