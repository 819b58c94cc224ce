"""The Triton kernels (``hem_plugins/implementations/triton_kernels.py``) run under Triton's CPU
interpreter, forced by the switch, and match the reference implementation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
if int(triton.__version__.split(".")[0]) < 3:
    pytest.skip(
        f"triton {triton.__version__}: the kernels need triton >= 3.0, whose interpreter "
        "runs them on CPU tensors",
        allow_module_level=True,
    )

TESTS = Path(__file__).resolve().parents[1]


def test_triton_kernels_match_the_reference_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.triton_interpreter_check", "12"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "13 cases match" in proc.stdout
