"""MMSegmentation 1.x adapter: HEM/HEM+ decode-head losses, the margin hook, DigitMosaic.

Load it from any config with::

    custom_imports = dict(imports=['hem_plugins.mmseg'], allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=dict(type='HEMPlusLoss')))

This subpackage (and tools/tests) alone imports mmseg, mmengine and mmcv.
"""

from .digit_mosaic import DigitMosaicDataset
from .focal import OneHotFocalLoss
from .hook import HEMMarginHook, hem_losses
from .losses import HEMLoss, HEMPlusLoss, load_class_counts

__all__ = [
    "DigitMosaicDataset",
    "HEMLoss",
    "HEMMarginHook",
    "HEMPlusLoss",
    "OneHotFocalLoss",
    "hem_losses",
    "load_class_counts",
]
