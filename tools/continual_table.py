#!/usr/bin/env python
"""Markdown table of ``tools/continual.py`` summaries: mean ± std over runs of each config.

    python tools/continual_table.py work_dirs/readme/replay_*_seed*

Each argument is a work dir holding ``summary.json``; runs whose work dir
names differ only in a trailing ``_seed<k>`` are grouped into one row. The
command line is :mod:`hem_plugins.benchmark.avalanche.summary_table`.
"""

import sys

from hem_plugins.benchmark.avalanche.summary_table import main

if __name__ == "__main__":
    sys.exit(main())
