#!/usr/bin/env python3
"""Create ``.venv`` and install the pinned stack, building mmcv's wheel if needed.

Run by ``make test`` and ``make bench``; uses the standard library only, so it
runs before anything is installed. The pins live in ``pyproject.toml`` (its
optional-dependency groups); this script reads them from there.

mmsegmentation 1.2.2 needs the full mmcv with compiled ops, which PyPI has
only as source: ``tools/build_mmcv.py`` (a command of its own, for pip users)
builds its wheel once and caches it in ``$HEM_WHEEL_CACHE`` (default
``~/.cache/hem_plugins/wheels``), so later installs take seconds.

A stamp file in ``.venv`` records a hash of the pins and of this script: a
second run on a warm machine installs nothing.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import build_mmcv  # tools/build_mmcv.py, beside this script
import tomllib

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
EXTRAS = ("torch", "avalanche", "mmseg", "bench", "dev")
WHEELS = build_mmcv.WHEELS


def log(msg: str) -> None:
    print(f"[setup_env] {msg}", flush=True)


def run(*cmd: str | Path, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def pins() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def pinned_version(groups: dict[str, list[str]], name: str) -> str:
    for reqs in groups.values():
        for req in reqs:
            m = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", req)
            if m:
                return m.group(1)
    raise SystemExit(f"pyproject.toml pins no exact version of {name!r}")


def stamp_path() -> Path:
    h = hashlib.sha256()
    h.update((ROOT / "pyproject.toml").read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(Path(build_mmcv.__file__).read_bytes())
    return VENV / f".hem-stack-{h.hexdigest()[:16]}"


def pip(*args: str | Path) -> None:
    # --no-compile: no byte-compiling of every installed file (torch's thousands) at install;
    # Python compiles what a run imports, once. A fresh make bench is a minute faster.
    run(PY, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--no-compile", *args)


def main() -> None:
    stamp = stamp_path()
    if stamp.exists():
        log("stack already installed (pins unchanged): nothing to do")
        return
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    groups = pins()
    pip(*groups["torch"])
    build_mmcv.build(PY, pinned_version(groups, "mmcv"), WHEELS)
    pip("--find-links", WHEELS, "--only-binary", "mmcv", "-e", f"{ROOT}[{','.join(EXTRAS)}]")
    for old in VENV.glob(".hem-stack-*"):
        old.unlink()
    stamp.touch()
    log("stack installed")


if __name__ == "__main__":
    main()
