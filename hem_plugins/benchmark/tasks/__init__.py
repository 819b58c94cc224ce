"""Benchmark tasks, one module per task (interface: :mod:`.base`).

:data:`TASKS` maps a task's name to its object, in report order. To add a task
(e.g. 3d continual learning or 3e segmentation), write ``tasks/<name>.py``
with a ``TASK`` object implementing the interface of :mod:`.base`, add it
here, and give it settings under ``tasks`` in ``configs/benchmark/_base.py``.
"""

from __future__ import annotations

from .ablation import TASK as ABLATION
from .adversarial import TASK as ADVERSARIAL
from .imbalanced import TASK as IMBALANCED
from .lr_sensitivity import TASK as LR_SENSITIVITY
from .openset import TASK as OPENSET

TASKS = {t.name: t for t in (OPENSET, ADVERSARIAL, IMBALANCED, ABLATION, LR_SENSITIVITY)}

__all__ = ["TASKS"]
