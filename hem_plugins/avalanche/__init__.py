"""Avalanche adapter: HEM / HEM+ in any Avalanche 0.6 strategy.

The criterion swap needs nothing from this subpackage::

    from hem_plugins import HEMLoss
    from hem_plugins.avalanche import ExperienceMarginsPlugin
    strategy = Naive(model=model, optimizer=optimizer, criterion=HEMLoss(),
                     plugins=[ExperienceMarginsPlugin()])

:class:`ExperienceMarginsPlugin` sets the HEM margin from each experience's
training-set size and the HEM+ margins from its class counts, fitted to the
head's width; :class:`SkipSettledPlugin` skips training samples HEM has already
settled, with no set-up (``with_sample_ids`` only for ids across experiences).
See ``docs/avalanche.md``. The benchmarks, models and config runner of the
experiments are in :mod:`hem_plugins.benchmark.avalanche`.
"""

from .plugin import ExperienceMarginsPlugin, count_classes, training_datasets
from .skip_settled import SkipSettledPlugin, with_sample_ids

__all__ = [
    "ExperienceMarginsPlugin",
    "SkipSettledPlugin",
    "count_classes",
    "training_datasets",
    "with_sample_ids",
]
