"""The task interface: every registered task is a Task, the runner and report call it without
probing, and a task module imports shared modules, never another task."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from hem_plugins.benchmark import report, runner  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.base import BaseTask, Context, Task  # noqa: E402

PACKAGE = Path(report.__file__).parent
#: Modules of ``tasks/`` that hold what tasks share; every other module is a task.
SHARED = {"__init__", "base", "sections", "classification", "open_set_runs", "seg_runs"}


def test_every_task_is_a_task_under_its_name():
    for name, task in TASKS.items():
        assert isinstance(task, Task) and isinstance(task, BaseTask), name
        assert task.name == name and task.title


def test_optional_parts_default_to_nothing():
    class Bare(BaseTask):
        name, title = "bare", "Bare"

        def units(self, settings):
            return 1

        def run_seed(self, settings, seed, ctx):
            ctx.advance("bare")
            return {"records": []}

        def render(self, result, out_dir):
            return "## Bare"

    task, result = Bare(), {"settings": {}, "seeds": [0], "per_seed": {"0": {"records": []}}}
    assert isinstance(task, Task)
    assert task.summary(result) == [] and task.headline(result, "digits") == {}
    assert runner.task_line(task, result, 3.0) == "Bare: done (3 s)"
    advanced: list[str] = []
    assert task.skip_seed({"seeds": [0, 1], "max_seeds": 1}, 1, Context(advance=advanced.append))
    assert advanced == ["bare seed 1: skipped (max_seeds)"]
    assert not task.skip_seed({"seeds": [0, 1], "max_seeds": 1}, 0, Context())


def test_runner_and_report_do_not_probe_tasks():
    for module in (runner, report):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        calls = [n.func.id for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]  # fmt: skip
        probed = [c for c in calls if c == "hasattr"]
        assert not probed, f"{module.__name__} probes with hasattr"


def test_tasks_import_shared_modules_not_other_tasks():
    for path in sorted((PACKAGE / "tasks").glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                tasks = [n for n in names if n.split(".")[0] not in SHARED]
                assert not tasks, f"{path.name} imports task module(s) {tasks}"
