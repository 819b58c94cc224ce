"""Benchmark tasks, one module per task (interface: :mod:`.base`).

:data:`TASKS` maps a task's name to its object, in report order. To add a task
(e.g. 3d continual learning or 3e segmentation), write ``tasks/<name>.py``
with a ``TASK`` object implementing the interface of :mod:`.base`, add it
here, and give it settings under ``tasks`` in ``configs/benchmark/_base.py``
(and smaller ones in ``smoke.py``). The runner, the progress bar, the JSON,
the report and the headline table pick it up from there. Sketch for 3d::

    class ContinualTask:
        name, title = "continual", "3d. Continual learning (SplitDigits, Avalanche)"
        claim = "HEM forgets less than CE ..."

        def units(self, s):
            return len(s["strategies"]) * len(s["losses"])

        def run_seed(self, s, seed, ctx):
            run = load_tool("continual").run  # tools/continual.py
            recs = []
            for strategy in s["strategies"]:
                for loss in s["losses"]:
                    ctx.advance(f"continual {strategy} {loss} seed {seed}")
                    out = run(s["config"], cfg_options={...strategy, loss, seed...},
                              work_dir=ctx.work_dir / "continual" / f"{strategy}_{loss}_{seed}")
                    recs.append({"group": {"dataset": "splitdigits", "strategy": strategy,
                                           "loss": loss},
                                 "metrics": {"final_acc": ..., "forgetting": ...}})
            return {"records": recs}

        # render(result, out_dir) -> str and headline(result, dataset) -> {column: {loss: cell}}
        # with aggregate / fmt / verdict / md_table from .base

3e is the same with ``load_tool("train_seg").train(config, work_dir, cfg_options)``
over the DigitMosaic configs of CE / Dice / HEM / HEM+ (metrics mIoU, mAcc).
"""

from __future__ import annotations

from .ablation import TASK as ABLATION
from .adversarial import TASK as ADVERSARIAL
from .imbalanced import TASK as IMBALANCED
from .lr_sensitivity import TASK as LR_SENSITIVITY
from .openset import TASK as OPENSET
from .skip_settled import TASK as SKIP_SETTLED

TASKS = {t.name: t for t in (OPENSET, ADVERSARIAL, IMBALANCED, ABLATION, LR_SENSITIVITY)}
TASKS[SKIP_SETTLED.name] = SKIP_SETTLED

__all__ = ["TASKS"]
