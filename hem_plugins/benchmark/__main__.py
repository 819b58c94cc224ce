"""``python -m hem_plugins.benchmark``: see :mod:`hem_plugins.benchmark.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
