"""Benchmark tasks, one module per task (interface: :mod:`.base`).

:data:`TASKS` maps a task's name to its object, in report order (3a ... 3g, adaptive_margins,
then skip_settled). To add a task, write ``tasks/<name>.py`` with a ``TASK`` object implementing the interface of
:mod:`.base`, add it here, and give it settings under ``tasks`` in
``configs/benchmark/_base.py`` (and smaller ones in ``smoke.py``). The runner, the
progress bar, the JSON, the report and the headline table pick it up from there.

Tasks that drive another tool are :mod:`.continual` (3d: ``tools/continual.py``'s
``run`` over the Avalanche configs) and :mod:`.segmentation` (3e:
``tools/train_seg.py``'s ``train`` over the DigitMosaic configs); both take a
``max_seeds`` setting to run only the first seeds of a profile. :mod:`.divisor` reruns
parts of 3a, 3c, 3g and 3e with HEM's three divisors (``docs/divisor.md``).
"""

from __future__ import annotations

from .ablation import TASK as ABLATION
from .adaptive_margins import TASK as ADAPTIVE_MARGINS
from .adversarial import TASK as ADVERSARIAL
from .continual import TASK as CONTINUAL
from .divisor import TASK as DIVISOR
from .imbalanced import TASK as IMBALANCED
from .lr_sensitivity import TASK as LR_SENSITIVITY
from .openset import TASK as OPENSET
from .segmentation import TASK as SEGMENTATION
from .skip_settled import TASK as SKIP_SETTLED

TASKS = {
    t.name: t
    for t in (
        OPENSET,
        ADVERSARIAL,
        IMBALANCED,
        CONTINUAL,
        SEGMENTATION,
        ABLATION,
        LR_SENSITIVITY,
        ADAPTIVE_MARGINS,
        SKIP_SETTLED,
        DIVISOR,
    )
}

__all__ = ["TASKS"]
