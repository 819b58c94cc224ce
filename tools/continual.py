#!/usr/bin/env python
"""Run a continual-learning experiment from a config: ``tools/continual.py CONFIG``.

    python tools/continual.py configs/avalanche/replay_hem_splitdigits.py \\
        [--cfg-options optimizer.lr=0.05 strategy.train_epochs=5] [--work-dir DIR] [--json]

Prints a line per experience and the final figures; writes ``DIR/summary.json`` and
the full log ``DIR/log.txt`` (``DIR``: ``work_dirs/<config name>`` by default). The
command line is :mod:`hem_plugins.benchmark.avalanche.cli`; from Python::

    from hem_plugins.benchmark.avalanche.runner import run
    summary = run('configs/avalanche/replay_hem_splitdigits.py',
                  cfg_options={'seed': 1}, work_dir='work_dirs/x', progress=print)
    summary['final_accuracy'], summary['forgetting'], summary['experience_accuracies'],
    summary['margins']

``run(config, cfg_options=None, work_dir=None, progress=None) -> dict`` takes a config
path, an mmengine ``Config`` or a dict; see :func:`hem_plugins.benchmark.avalanche.runner.run`
for the summary's keys.
"""

import sys

from hem_plugins.benchmark.avalanche.cli import main

if __name__ == "__main__":
    sys.exit(main())
