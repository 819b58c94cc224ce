#!/usr/bin/env python3
"""Create ``.venv`` and install the pinned stack, building mmcv's wheel if needed.

Run by ``make test`` and ``make bench``; uses the standard library only, so it
runs before anything is installed. The pins live in ``pyproject.toml`` (its
optional-dependency groups); this script reads them from there.

mmsegmentation 1.2.2 imports ``mmcv.ops``, so it needs full mmcv with compiled
ops. PyPI has only mmcv 2.1.0's source, which does not build against
torch >= 2.10 as shipped (its setup.py hard-codes ``-std=c++17``; torch's
headers need C++20). The wheel is built once, on the CPU, with that flag
changed, and cached in ``$HEM_WHEEL_CACHE`` (default
``~/.cache/hem_plugins/wheels``) so later installs take seconds.

A stamp file in ``.venv`` records a hash of the pins and of this script: a
second run on a warm machine installs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
EXTRAS = ("torch", "avalanche", "mmseg", "bench", "dev")
WHEELS = Path(os.environ.get("HEM_WHEEL_CACHE", Path.home() / ".cache" / "hem_plugins" / "wheels"))
# Build-time tools for mmcv: setuptools 82 removed pkg_resources, which mmcv's
# setup.py imports.
BUILD_TOOLS = ["ninja==1.13.0", "setuptools==80.9.0", "wheel==0.45.1"]


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
    return VENV / f".hem-stack-{h.hexdigest()[:16]}"


def pip(*args: str | Path) -> None:
    run(PY, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", *args)


def build_mmcv(version: str) -> Path:
    found = sorted(WHEELS.glob(f"mmcv-{version}-*.whl"))
    if found:
        log(f"using cached {found[-1]}")
        return found[-1]
    WHEELS.mkdir(parents=True, exist_ok=True)
    log(f"building mmcv {version} with compiled ops on the CPU (about 10 minutes, once)")
    with tempfile.TemporaryDirectory(prefix="mmcv-build-") as tmp:
        tmp_path = Path(tmp)
        run(
            PY,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"mmcv=={version}",
            "-d",
            tmp_path,
        )
        sdist = next(tmp_path.glob("mmcv-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter="data")
        src = next(p for p in tmp_path.iterdir() if p.is_dir())
        setup_py = src / "setup.py"
        text = setup_py.read_text()
        if "-std=c++17" not in text:
            raise SystemExit(f"mmcv {version}: setup.py has no -std=c++17 to patch")
        setup_py.write_text(text.replace("-std=c++17", "-std=c++20"))
        env = dict(os.environ, MMCV_WITH_OPS="1", FORCE_CUDA="0", MAX_JOBS=str(os.cpu_count() or 2))
        run(
            PY,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            WHEELS,
            src,
            env=env,
        )
    return next(WHEELS.glob(f"mmcv-{version}-*.whl"))


def main() -> None:
    stamp = stamp_path()
    if stamp.exists():
        log("stack already installed (pins unchanged): nothing to do")
        return
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    groups = pins()
    pip(*groups["torch"], *BUILD_TOOLS)
    build_mmcv(pinned_version(groups, "mmcv"))
    pip("--find-links", WHEELS, "--only-binary", "mmcv", "-e", f"{ROOT}[{','.join(EXTRAS)}]")
    for old in VENV.glob(".hem-stack-*"):
        old.unlink()
    stamp.touch()
    log("stack installed")


if __name__ == "__main__":
    main()
