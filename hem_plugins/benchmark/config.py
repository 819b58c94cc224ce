"""Benchmark profiles: plain Python files under ``configs/benchmark/`` (shipped with the package).

A profile file assigns module-level names (``seeds``, ``train``, ``tasks``, ...).
``_base_ = "_base.py"`` (a path relative to the file) inherits another file;
dicts merge recursively, other values replace. No mmengine needed.

The shipped profiles quick, beyond and tune run a part of the tasks: their ``only_tasks``
is :data:`.tasks.PROFILE_TASKS`'s entry (the paper's claims, the rest, the tasks that select),
set by :func:`load_config` when the file names none.
"""

from __future__ import annotations

import copy
import json
import runpy
from pathlib import Path

from ..resources import CONFIG_ROOT, display_path

PROFILE_DIR = CONFIG_ROOT / "benchmark"


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config not found: {path}")
    ns = {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}
    base = ns.pop("_base_", None)
    ns = {k: v for k, v in ns.items() if not k.startswith("_") and not callable(v)}
    if "only_tasks" not in ns and path.resolve().parent == PROFILE_DIR.resolve():
        from .tasks import PROFILE_TASKS

        if path.stem in PROFILE_TASKS:
            ns["only_tasks"] = list(PROFILE_TASKS[path.stem])
    if base:
        return merge(load_config(path.parent / base), ns)
    return ns


def load_profile(name_or_path: str) -> dict:
    """A profile by name (``smoke``, ``quick``, ``full``) or by path to a config file."""
    p = Path(name_or_path)
    if p.suffix == ".py":
        cfg = load_config(p)
    else:
        p = PROFILE_DIR / f"{name_or_path}.py"
        if not p.is_file():
            names = sorted(f.stem for f in PROFILE_DIR.glob("[!_]*.py"))
            raise FileNotFoundError(
                f"unknown profile {name_or_path!r}: choose from {names} or a .py path"
            )
        cfg = load_config(p)
    cfg.setdefault("profile", p.stem)
    sel = cfg.get("selection", {})
    if sel.get("mode") == "tuned":
        path = p.parent / sel.get("file", "tuned.json")
        cfg["tuned"] = load_tuned(path)
        sel["file"] = display_path(path)
    if cfg.get("write_tuned"):
        cfg["write_tuned"] = str(p.parent / cfg["write_tuned"])
    return cfg


def load_tuned(path: Path) -> dict:
    """The ``tuned`` section of a JSON file the ``tune`` profile wrote (see :mod:`.protocol`):
    ``{task: {selection key: {"chosen", "metric", "grid", "seeds"}}}``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"selection.mode='tuned' needs {path}: write it with "
            "`python -m hem_plugins.benchmark --profile tune`"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data.get("tuned"), dict):
        raise ValueError(f"{path} holds no object named 'tuned'")
    return data["tuned"]


#: Sections of a profile that every task sees (a task's own ``tasks[name]`` overlays them).
SHARED = ("datasets", "dataset_options", "dataset_train", "model", "dataset_model", "train",
          "loss_options", "selection", "min_train_acc", "data_seed", "init_seed")  # fmt: skip


def profile_tasks(cfg: dict) -> list[str]:
    """The tasks a profile runs, in report order: those with settings under ``tasks`` and, when
    the profile names ``only_tasks``, among them (quick: the paper's claims; beyond: the rest;
    tune: the tasks that select; see :data:`.tasks.PROFILE_TASKS`)."""
    from .tasks import TASKS

    only = cfg.get("only_tasks", TASKS)
    return [t for t in TASKS if t in cfg.get("tasks", {}) and t in only]


def task_settings(cfg: dict, task: str) -> dict:
    """Settings of one task: the shared sections overlaid with ``tasks[task]``."""
    if task not in cfg.get("tasks", {}):
        raise KeyError(
            f"config has no settings for task {task!r} (tasks: {sorted(cfg.get('tasks', {}))})"
        )
    shared = {k: cfg[k] for k in SHARED if k in cfg}
    out = merge(shared, cfg["tasks"][task])
    # the task's entries, and those of the tasks whose settings it reruns (their owners)
    from .protocol import SELECTION_OWNERS

    tuned = cfg.get("tuned", {})
    out["tuned"] = {
        t: copy.deepcopy(tuned.get(t, {})) for t in (task, *SELECTION_OWNERS.get(task, ()))
    }
    return out


def model_cfg_for(settings: dict, dataset: str) -> dict:
    """``model`` merged with ``dataset_model[dataset]`` (per-dataset overrides)."""
    return {**settings.get("model", {}), **settings.get("dataset_model", {}).get(dataset, {})}


def train_cfg_for(settings: dict, dataset: str) -> dict:
    """``train`` merged with ``dataset_train[dataset]`` (per-dataset overrides)."""
    return {**settings["train"], **settings.get("dataset_train", {}).get(dataset, {})}
