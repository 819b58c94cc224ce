"""MMSegmentation 1.x adapter: HEM/HEM+ decode-head losses and the margin hook.

Load it from any config with::

    custom_imports = dict(imports=['hem_plugins.mmseg'], allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=dict(type='HEMPlusLoss')))

Outside the experiments (:mod:`hem_plugins.benchmark`), this subpackage alone
imports mmseg, mmengine and mmcv. The DigitMosaic dataset, the rival losses and
the runner of the experiments are in :mod:`hem_plugins.benchmark.mmseg`.
"""

from .hook import HEMMarginHook, hem_losses
from .losses import HEMLoss, HEMPlusLoss, load_class_counts

__all__ = ["HEMLoss", "HEMMarginHook", "HEMPlusLoss", "hem_losses", "load_class_counts"]
