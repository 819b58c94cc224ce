"""Which code and configs a benchmark result came from: one hash over what decides its numbers.

:func:`content_hash` is a sha256 over every ``*.py`` of ``hem_plugins/`` (and the C++ kernel
``hem_plugins/implementations/cpu_kernel.cpp``) and every ``*.py`` / ``*.json`` of
``configs/``, in sorted relative-path order, each file's path hashed with it. Python files
are hashed through their syntax tree with the docstrings removed, so comments, docstrings
and formatting leave the hash as it is; a change of code or of a config value changes it.

``configs/benchmark/tuned.json`` decides the tuned profiles' numbers (quick, beyond), so it
is hashed (its ``tuned`` section alone: its commands and its own provenance say how it was
made, not what it holds). The tune profile, which writes it, does not read it: its
provenance is the hash without it (``with_tuned=False``). Regenerate in that order: the
tune profile first, then quick and beyond.

The runner writes :func:`provenance` into every ``results.json`` and the tune profile into
``tuned.json``; ``tests/benchmark/test_provenance.py`` refuses a committed one whose hash is
not the tree's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
from pathlib import Path

__all__ = ["EXCLUDED", "TUNED_JSON", "content_hash", "hashed_files", "provenance"]

#: Modules that only render or print and never change a number of a result: the report and
#: its tables (``tasks/sections.py``: the cells, tables, verdict texts and figures the tasks'
#: report methods make from results.json), the progress display, the command-line parser.
#: Their changes need no rerun.
EXCLUDED = (
    "hem_plugins/benchmark/cli.py",
    "hem_plugins/benchmark/progress.py",
    "hem_plugins/benchmark/report.py",
    "hem_plugins/benchmark/tasks/sections.py",
)
#: The tune profile's output, read by the tuned profiles (hashed through its ``tuned`` part).
TUNED_JSON = "configs/benchmark/tuned.json"
_EXTRA = ("hem_plugins/implementations/cpu_kernel.cpp",)


def _root(root: str | Path | None) -> Path:
    """The folder holding ``hem_plugins/``: a checkout, or site-packages for an install."""
    return Path(root) if root is not None else Path(__file__).resolve().parents[2]


def _configs_dir(root: Path) -> Path:
    """``configs/``: reached through ``hem_plugins/configs`` (a link in a checkout, a copy
    in a wheel), else the checkout's top-level one."""
    linked = root / "hem_plugins" / "configs"
    return linked if linked.is_dir() else root / "configs"


def hashed_files(root: str | Path | None = None, with_tuned: bool = True) -> list[tuple[str, Path]]:
    """``(relative path, file)`` of every hashed file, sorted by the relative path."""
    root = _root(root)
    files: dict[str, Path] = {}
    package = root / "hem_plugins"
    for dirpath, dirnames, filenames in os.walk(package):  # links are not followed
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != "__pycache__"
                       and not (here == package and d == "configs")]  # fmt: skip
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if name.endswith(".py") or rel in _EXTRA:
                files[rel] = here / name
    configs = _configs_dir(root)
    for dirpath, dirnames, filenames in os.walk(configs, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith((".py", ".json")):
                files["configs/" + (here / name).relative_to(configs).as_posix()] = here / name
    for rel in EXCLUDED:
        files.pop(rel, None)
    if not with_tuned:
        files.pop(TUNED_JSON, None)
    return sorted(files.items())


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:]
    return tree


def _dump(node) -> str:
    """``ast.dump`` without positions and without empty fields (None, []), so that the text
    is the same on every Python the package supports (3.13's ``ast.dump`` leaves empty fields
    out, 3.12 added empty ``type_params``)."""
    if isinstance(node, ast.AST):
        fields = [(k, getattr(node, k, None)) for k in node._fields]
        inner = ", ".join(f"{k}={_dump(v)}" for k, v in fields if v is not None and v != [])
        return f"{type(node).__name__}({inner})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(v) for v in node) + "]"
    return repr(node)


def _file_bytes(rel: str, path: Path) -> bytes:
    """What of a file decides results: a Python file's syntax tree less its docstrings,
    tuned.json's ``tuned`` section, a JSON file's data, other files as they are."""
    raw = path.read_bytes()
    if rel.endswith(".py"):
        return _dump(_strip_docstrings(ast.parse(raw, filename=rel))).encode()
    if rel.endswith(".json"):
        data = json.loads(raw)
        if rel == TUNED_JSON:
            data = data.get("tuned", {})
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return raw


def content_hash(root: str | Path | None = None, with_tuned: bool = True) -> str:
    """sha256 (hex) over the code and configs that determine the benchmark's results.

    ``root``: the folder holding ``hem_plugins/`` (default: this package's parent).
    ``with_tuned``: whether ``configs/benchmark/tuned.json`` is among them (False for the
    tune profile, which writes that file and does not read it).
    """
    h = hashlib.sha256()
    for rel, path in hashed_files(root, with_tuned):
        body = _file_bytes(rel, path)
        h.update(f"{rel}\0{len(body)}\0".encode())
        h.update(body)
    return h.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def provenance(root: str | Path | None = None, with_tuned: bool = True) -> dict:
    """``{"commit", "dirty", "content_hash", "hashed_files", "with_tuned"}`` of the tree.

    ``commit``: git's HEAD, None outside a checkout (an installed package); ``dirty``:
    whether a hashed file differs from HEAD or is not committed (None outside a checkout).
    """
    root = _root(root)
    files = hashed_files(root, with_tuned)
    commit = dirty = None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top and Path(top.strip()).resolve() == root.resolve():
        head = _git(root, "rev-parse", "HEAD")
        commit = head.strip() if head else None
        status = _git(root, "status", "--porcelain", "--untracked-files=all", "--",
                      "hem_plugins", "configs")  # fmt: skip
        if status is not None:
            changed = {line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines()}
            changed = {p.replace("hem_plugins/configs/", "configs/", 1) for p in changed}
            dirty = any(rel in changed for rel, _ in files)
    return {
        "commit": commit,
        "dirty": dirty,
        "content_hash": content_hash(root, with_tuned),
        "hashed_files": len(files),
        "with_tuned": with_tuned,
    }
