"""Benchmark profiles: plain Python files under ``configs/benchmark/``.

A profile file assigns module-level names (``seeds``, ``train``, ``tasks``, ...).
``_base_ = "_base.py"`` (a path relative to the file) inherits another file;
dicts merge recursively, other values replace. No mmengine needed.
"""

from __future__ import annotations

import copy
import runpy
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parents[2] / "configs" / "benchmark"


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
    return cfg


def task_settings(cfg: dict, task: str) -> dict:
    """Settings of one task: the shared sections overlaid with ``tasks[task]``."""
    if task not in cfg.get("tasks", {}):
        raise KeyError(
            f"config has no settings for task {task!r} (tasks: {sorted(cfg.get('tasks', {}))})"
        )
    shared = {k: cfg[k] for k in ("datasets", "dataset_options", "dataset_train", "model", "dataset_model", "train",
                                  "loss_options") if k in cfg}  # fmt: skip
    return merge(shared, cfg["tasks"][task])
