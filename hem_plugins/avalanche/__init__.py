"""Avalanche adapter: HEM / HEM+ in any Avalanche 0.6 strategy.

The criterion swap needs nothing from this subpackage::

    from hem_plugins import HEMLoss, HEMPlusLoss
    strategy = Naive(model, optimizer, criterion=HEMLoss(), plugins=[ExperienceMarginsPlugin()])

:class:`ExperienceMarginsPlugin` (formerly ``HEMPlusPlugin``, still an alias) sets the
HEM margin from each experience's training-set size and the HEM+ margins from its class
counts, fitted to the head's width; :class:`SkipSettledPlugin` skips training samples HEM
has already settled, with no set-up (``with_sample_ids`` only for ids across
experiences). See ``docs/design.md``. The
benchmarks and models here serve the configs under ``configs/avalanche``;
``hem_plugins.avalanche.runner`` (needs mmengine) runs a config end to end.
"""

from .benchmarks import PermutedDigits, SplitCIFAR10, SplitCIFAR100, SplitDigits, SplitMNIST
from .models import MLP, IncrementalMLP, MultiHeadMLP
from .plugin import ExperienceMarginsPlugin, HEMPlusPlugin, count_classes, training_datasets
from .skip_settled import SkipSettledPlugin, with_sample_ids

__all__ = [
    "ExperienceMarginsPlugin",
    "HEMPlusPlugin",
    "IncrementalMLP",
    "MLP",
    "MultiHeadMLP",
    "PermutedDigits",
    "SkipSettledPlugin",
    "SplitCIFAR10",
    "SplitCIFAR100",
    "SplitDigits",
    "SplitMNIST",
    "count_classes",
    "training_datasets",
    "with_sample_ids",
]
