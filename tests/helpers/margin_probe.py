"""A test-only hook: each rank writes the margins of its HEM/HEM+ losses to the work dir.

Imported by the DDP test's config through ``custom_imports`` (``helpers.margin_probe``, with
``tests/`` on the subprocess's ``PYTHONPATH``: :func:`helpers.seg.subprocess_env`).
"""

from __future__ import annotations

import json
import os

from mmengine import dist
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from hem_plugins.mmseg import hem_losses


@HOOKS.register_module()
class MarginProbeHook(Hook):
    priority = "LOWEST"

    def _dump(self, runner, stage: str) -> None:
        data = {name: loss.margins.tolist() for name, loss in hem_losses(runner.model)}
        path = os.path.join(runner.work_dir, f"margins_{stage}_rank{dist.get_rank()}.json")
        with open(path, "w") as f:
            json.dump(data, f)

    def before_train(self, runner) -> None:
        self._dump(runner, "before_train")

    def after_train(self, runner) -> None:
        self._dump(runner, "after_train")
