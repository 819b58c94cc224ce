"""Benchmark tasks, one module per task, each a :class:`.base.Task` (its interface).

:data:`TASKS` maps a task's name to its object, in report order (3a ... 3g, adaptive_margins,
skip_settled, divisor, margin_scaling, anomaly_segmentation, settled_rule). To add a task, write ``tasks/<name>.py`` with a class deriving
from :class:`.base.BaseTask` (or, for a classification task, from
:class:`.classification.ClassificationTask`, which runs the load -> select -> train ->
predict -> record loop and leaves the task its runs and its records) and an instance
``TASK`` of it, add that here, and give it settings under ``tasks`` in ``configs/benchmark/_base.py`` (and smaller
ones in ``smoke.py``). The runner, the progress bar, the JSON, the report and the headline
table pick it up from there.

Modules that hold what several tasks share rather than a task: :mod:`.base` (the
interface), :mod:`.sections` (report pieces), :mod:`.classification` (the classification
loop), :mod:`.open_set_runs` (3a's and 3f's runs) and :mod:`.seg_runs` (DigitMosaic runs
through mmseg, 3e's and adaptive_margins'). A task imports those, never another task: the
divisor task, which reruns parts of 3a, 3c, 3g and 3e, gets those tasks from here.
"""

from __future__ import annotations

from .ablation import TASK as ABLATION
from .adaptive_margins import TASK as ADAPTIVE_MARGINS
from .adversarial import TASK as ADVERSARIAL
from .anomaly_segmentation import TASK as ANOMALY_SEGMENTATION
from .base import Task
from .continual import TASK as CONTINUAL
from .divisor import DivisorTask
from .imbalanced import TASK as IMBALANCED
from .lr_sensitivity import TASK as LR_SENSITIVITY
from .margin_scaling import TASK as MARGIN_SCALING
from .openset import TASK as OPENSET
from .segmentation import TASK as SEGMENTATION
from .settled_rule import TASK as SETTLED_RULE
from .skip_settled import TASK as SKIP_SETTLED

DIVISOR = DivisorTask({t.name: t for t in (OPENSET, IMBALANCED, LR_SENSITIVITY, SEGMENTATION)})

TASKS: dict[str, Task] = {
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
        MARGIN_SCALING,
        ANOMALY_SEGMENTATION,
        SETTLED_RULE,
    )
}

#: The paper's claims 3a-3g: the quick profile's tasks (``make bench``, benchmarks/quick/); the
#: others are the beyond profile's (``make bench-beyond``, benchmarks/beyond/).
PAPER_TASKS = (
    "openset",
    "adversarial",
    "imbalanced",
    "continual",
    "segmentation",
    "ablation",
    "lr_sensitivity",
)
#: The tasks beyond the paper's claims: the beyond profile's (docs/divisor.md,
#: docs/adaptive_margins.md, docs/skip_settled.md, docs/margin_scaling.md,
#: docs/anomaly_segmentation.md, docs/settled_rule.md).
BEYOND_TASKS = tuple(t for t in TASKS if t not in PAPER_TASKS)
#: The tasks the tune profile selects for (quick's and beyond's): all but 3g, which trains
#: every lr of its grid and selects nothing; margin_scaling, which selects its margins on
#: validation inside the task (its lr is fixed in its settings); and anomaly_segmentation,
#: which reads 3e's lr (its selection keys are 3e's, protocol.SELECTION_OWNERS); and
#: settled_rule, whose lr and rule strength are fixed in its settings (it selects nothing).
TUNE_TASKS = tuple(
    t
    for t in TASKS
    if t not in ("lr_sensitivity", "margin_scaling", "anomaly_segmentation", "settled_rule")
)
#: The tasks of the shipped profiles that run a part of the registry: the profile loader's
#: ``only_tasks`` for the file of that name under ``configs/benchmark/`` when the file sets
#: none itself (a profile inheriting one of them inherits its list).
PROFILE_TASKS: dict[str, tuple[str, ...]] = {
    "quick": PAPER_TASKS,
    "beyond": BEYOND_TASKS,
    "tune": TUNE_TASKS,
}

__all__ = ["BEYOND_TASKS", "PAPER_TASKS", "PROFILE_TASKS", "TASKS", "TUNE_TASKS", "Task"]
