#!/usr/bin/env python3
"""Build mmcv's wheel, with its compiled ops, for the torch of this environment; once.

mmsegmentation 1.2.2 imports ``mmcv.ops``, so it needs the full mmcv (2.0-2.1)
with compiled ops; ``mmcv-lite`` does not do. PyPI holds only mmcv 2.1.0's
source, and that source does not build as shipped against torch >= 2.10: its
``setup.py`` asks for ``-std=c++17`` while torch's headers need C++20. This
tool downloads the source, changes that one flag, and builds the wheel on the
CPU (about 10 minutes on 2 cores) into a cache, ``$HEM_WHEEL_CACHE`` (default
``~/.cache/hem_plugins/wheels``); a second run finds the wheel there and
builds nothing. Then::

    pip install -e ".[mmseg]" --find-links ~/.cache/hem_plugins/wheels

The build runs in this interpreter's environment (no build isolation: it
compiles against the torch installed here), so it first installs what the
build needs beside torch: ``ninja``, ``wheel`` and a setuptools that still has
``pkg_resources`` (``setuptools<81``; mmcv's ``setup.py`` imports it, and
mmengine needs it at run time too). Uses the standard library only.

    python tools/build_mmcv.py            # mmcv 2.1.0 into the cache; prints the wheel's path
    python tools/build_mmcv.py --check    # only say whether the cache holds the wheel
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MMCV_VERSION = "2.1.0"
WHEELS = Path(os.environ.get("HEM_WHEEL_CACHE", Path.home() / ".cache" / "hem_plugins" / "wheels"))
BUILD_TOOLS = ["ninja==1.13.0", "setuptools==80.9.0", "wheel==0.45.1"]
"""What mmcv's build needs beside torch (setuptools 81 and later have no ``pkg_resources``)."""


def log(msg: str) -> None:
    print(f"[build_mmcv] {msg}", flush=True)


def run(*cmd: str | Path, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def cached_wheel(version: str = MMCV_VERSION, wheels: Path = WHEELS) -> Path | None:
    """The newest cached wheel of mmcv ``version``, or None."""
    found = sorted(wheels.glob(f"mmcv-{version}-*.whl"))
    return found[-1] if found else None


def patch_setup_py(setup_py: Path) -> None:
    """Ask for C++20 where mmcv's ``setup.py`` asks for C++17 (torch >= 2.10 needs it)."""
    text = setup_py.read_text()
    if "-std=c++17" not in text:
        raise SystemExit(f"{setup_py}: no -std=c++17 to change; is this mmcv {MMCV_VERSION}?")
    setup_py.write_text(text.replace("-std=c++17", "-std=c++20"))


def build(python: str | Path = sys.executable, version: str = MMCV_VERSION,
          wheels: Path = WHEELS) -> Path:  # fmt: skip
    """The cached wheel of mmcv ``version``, built with ``python`` first if there is none."""
    found = cached_wheel(version, wheels)
    if found:
        log(f"using cached {found}")
        return found
    try:
        subprocess.run([str(python), "-c", "import torch"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        raise SystemExit(
            f"{python} cannot import torch: install torch first (mmcv compiles against it)"
        ) from None
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "--quiet", *BUILD_TOOLS)
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"building mmcv {version} with compiled ops on the CPU (about 10 minutes, once)")
    with tempfile.TemporaryDirectory(prefix="mmcv-build-") as tmp:
        tmp_path = Path(tmp)
        run(*pip, "download", "--no-deps", "--no-binary", ":all:", f"mmcv=={version}", "-d", tmp)
        sdist = next(tmp_path.glob("mmcv-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp_path, filter="data")
        src = next(p for p in tmp_path.iterdir() if p.is_dir())
        patch_setup_py(src / "setup.py")
        env = dict(os.environ, MMCV_WITH_OPS="1", FORCE_CUDA="0", MAX_JOBS=str(os.cpu_count() or 2))
        run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, src, env=env)
    found = cached_wheel(version, wheels)
    if found is None:
        raise SystemExit(f"the build finished but left no mmcv-{version} wheel in {wheels}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the wheel is cached")
    args = parser.parse_args(argv)
    if args.check:
        found = cached_wheel()
        print(found if found else f"no mmcv-{MMCV_VERSION} wheel in {WHEELS}")
        return 0 if found else 1
    wheel = build()
    print(wheel)
    log(f'next: pip install -e ".[mmseg]" --find-links {WHEELS}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
