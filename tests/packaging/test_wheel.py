"""The wheel holds what the benchmark suite needs, and the suite runs from it outside a checkout.

The wheel is built from a copy of the package's sources (``pip wheel`` with no
build isolation and no downloads); its file list must hold every config of the
repository's ``configs/`` (the profiles, ``tuned.json``, the mmseg and Avalanche
configs the tasks train), the runners and the CPU kernel's source. Then the
wheel's files, unpacked into a folder of their own, run ``python -m
hem_plugins.benchmark`` from a directory that is not the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.py")) + sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.json")
)
# The C++ kernel's source, compiled on first use: every .cpp file of the package.
KERNEL_SOURCES = sorted(
    p.relative_to(REPO).as_posix() for p in (REPO / "hem_plugins").rglob("*.cpp")
)
NEEDED = [
    "hem_plugins/__init__.py",
    *KERNEL_SOURCES,
    "hem_plugins/resources.py",
    "hem_plugins/benchmark/__main__.py",
    "hem_plugins/benchmark/cli.py",
    "hem_plugins/benchmark/mmseg/runner.py",
    "hem_plugins/benchmark/avalanche/runner.py",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "hem_plugins", src / "hem_plugins", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (found,) = out.glob("hem_plugins-*.whl")
    return found


@pytest.mark.slow
def test_wheel_holds_the_configs_runners_and_kernel_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert CONFIGS and "configs/benchmark/tuned.json" in CONFIGS
    assert KERNEL_SOURCES, "no .cpp file under hem_plugins/: where is the C++ kernel's source?"
    missing = [n for n in NEEDED if n not in names]
    missing += [f"hem_plugins/{c}" for c in CONFIGS if f"hem_plugins/{c}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not any(n.startswith(("tests/", "tools/", "configs/")) for n in names)


@pytest.mark.slow
def test_benchmark_runs_from_the_installed_files_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import hem_plugins; print(hem_plugins.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hem_plugins.benchmark", "--profile", "smoke",
           "--tasks", "openset", "--seeds", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    run = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    assert "3a" in run.stdout and "report:" in run.stdout
