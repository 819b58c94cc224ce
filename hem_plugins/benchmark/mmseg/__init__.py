"""The segmentation side of the experiments (needs the ``mmseg`` extras).

Importing it registers, besides the adapter's losses and hook
(:mod:`hem_plugins.mmseg`), what only the experiments use: the DigitMosaic
dataset, the one-hot focal loss, logit-adjusted cross-entropy with its
prior hook, LogitNorm, and the DigitMosaic variant with unknown digits (anomaly
segmentation). The DigitMosaic configs load it with::

    custom_imports = dict(imports=['hem_plugins.benchmark.mmseg'], allow_failed_imports=False)

:mod:`.runner` trains and tests a config with mmengine's Runner.
"""

import hem_plugins.mmseg  # noqa: F401  (registers the HEM losses and the margin hook)

from .digit_mosaic import DigitMosaicAnomalyDataset, DigitMosaicDataset
from .focal import OneHotFocalLoss
from .logit_adjusted import LogitAdjustedLoss, LogitAdjustHook
from .logit_norm import LogitNormLoss

__all__ = [
    "DigitMosaicAnomalyDataset",
    "DigitMosaicDataset",
    "LogitAdjustHook",
    "LogitAdjustedLoss",
    "LogitNormLoss",
    "OneHotFocalLoss",
]
