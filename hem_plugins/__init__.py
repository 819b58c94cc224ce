"""HEM / HEM+ margin losses (Spratling & Schuett, arXiv:2501.12191) for PyTorch toolkits.

The core needs torch alone: the losses (``functional``, ``modules``), their margins
(``margins``, ``adaptive_margins``), settled samples (``settled``, ``skipping``,
``settled_rules``),
unknown-rejection scores and their histogram metrics (``unknown``), the
implementations of the loss with the switch between them (``implementations``) and the
shipped configs (``resources``). Toolkit
adapters live in their own subpackages and import their toolkit there:
``hem_plugins.avalanche`` and ``hem_plugins.mmseg``.
"""

from .functional import hem_loss, mm_loss
from .margins import DEFAULT_SCALE, FALLBACK_MARGIN, class_margins, margin_for_dataset
from .modules import HEMLoss, HEMPlusLoss
from .settled import settled_mask

__all__ = [
    "DEFAULT_SCALE",
    "FALLBACK_MARGIN",
    "HEMLoss",
    "HEMPlusLoss",
    "class_margins",
    "hem_loss",
    "margin_for_dataset",
    "mm_loss",
    "settled_mask",
]
__version__ = "0.1.0"
