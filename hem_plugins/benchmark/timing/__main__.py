"""``python -m hem_plugins.benchmark.timing``: the loss timing (``tools/bench_loss.py``)."""

from .cli import main

main()
