"""MMSegmentation 1.x adapter: HEM/HEM+ decode-head losses, the margin hook, an anomaly metric.

Load it from any config with::

    custom_imports = dict(imports=['hem_plugins.mmseg'], allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=dict(type='HEMPlusLoss')))

``AnomalyMetric`` (:mod:`.anomaly`) scores pixel-level unknown rejection from the
decode head's logits (``val_evaluator``).

Outside the experiments (:mod:`hem_plugins.benchmark`), this subpackage alone
imports mmseg, mmengine and mmcv. The DigitMosaic dataset, the rival losses and
the runner of the experiments are in :mod:`hem_plugins.benchmark.mmseg`.
"""

from .anomaly import AnomalyMetric
from .hook import HEMMarginHook, hem_losses
from .losses import HEMLoss, HEMPlusLoss, load_class_counts

__all__ = [
    "AnomalyMetric",
    "HEMLoss",
    "HEMMarginHook",
    "HEMPlusLoss",
    "hem_losses",
    "load_class_counts",
]
