"""The continual-learning side of the experiments (needs the ``avalanche`` extras).

:mod:`.benchmarks` (SplitDigits, PermutedDigits, and SplitMNIST / SplitCIFAR from
files on disk), :mod:`.models` (MLPs with fixed, incremental or multi-task heads),
:mod:`.registry` (config ``type`` names, with mmengine's ``Registry``),
:mod:`.runner` (a config end to end), :mod:`.cli` (``tools/continual.py``'s
command line) and :mod:`.summary_table` (``tools/continual_table.py``: the
summaries of several runs as one table).
"""

from .benchmarks import PermutedDigits, SplitCIFAR10, SplitCIFAR100, SplitDigits, SplitMNIST
from .models import MLP, IncrementalMLP, MultiHeadMLP

__all__ = [
    "IncrementalMLP",
    "MLP",
    "MultiHeadMLP",
    "PermutedDigits",
    "SplitCIFAR10",
    "SplitCIFAR100",
    "SplitDigits",
    "SplitMNIST",
]
