"""One function chooses the implementation (``implementations.choose``), one switch overrides it,
and the table of docs/performance.md says what the function does."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from hem_plugins import HEMPlusLoss, hem_loss, implementations
from hem_plugins.implementations import LossOptions, choice, choose, chunked, cpu_kernel

DOC = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
SECTION = "## Which implementation runs where"
HEADER = ["device", "`p`", "logits dtype", "logits shape", "when", "implementation"]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}  # fmt: skip
SHAPES = {"`(N, C)`": (4, 3), "`(N, C, d1, ...)`": (2, 3, 4, 5)}
CONDITIONS = ("", "the C++ kernel did not build", "triton does not import", "big-endian host")


class CudaLogits:
    """What ``choose`` reads of CUDA logits (device, dtype, number of dimensions), for
    machines without a CUDA device."""

    is_cuda, is_cpu, device = True, False, torch.device("cuda")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    def dim(self) -> int:
        return len(self.shape)


def logits_on(device: str, shape, dtype):
    if device == "CPU":
        return torch.zeros(shape, dtype=dtype)
    if torch.cuda.is_available():
        return torch.zeros(shape, dtype=dtype, device="cuda")
    return CudaLogits(shape, dtype)


def table() -> list[dict]:
    """The rows of the table, each expanded into the inputs it covers."""
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0] == HEADER, f"the table's columns changed: {cells[0]}"
    rows = []
    for device, p, dtypes, shapes, when, name in cells[2:]:
        assert device in ("CPU", "CUDA") and when in CONDITIONS, (device, when)
        rows.append(
            {
                "line": " | ".join((device, p, dtypes, shapes, when, name)),
                "device": device,
                "p": [1, 2] if p == "any" else [int(p)],
                "dtypes": list(DTYPES) if dtypes == "any" else dtypes.split(", "),
                "shapes": list(SHAPES) if shapes == "any" else [shapes],
                "when": when,
                "name": name.strip("`"),
            }
        )
    return rows


def cases(row):
    for p in row["p"]:
        for dtype in row["dtypes"]:
            for shape in row["shapes"]:
                yield p, dtype, shape


@pytest.fixture
def machine(monkeypatch):
    """Set the machine a row's *when* describes: by default the kernel built, triton
    imports and the host is little-endian."""

    def set_to(when: str) -> None:
        built = when != "the C++ kernel did not build"
        # the kernel's build state: a loaded library (choose never calls it), or the error
        monkeypatch.setattr(cpu_kernel, "_lib", object() if built else None)
        monkeypatch.setattr(cpu_kernel, "_tried", True)
        monkeypatch.setattr(cpu_kernel, "BUILD_ERROR", None if built else "no compiler (a test)")
        error = "ImportError: a test" if when == "triton does not import" else None
        monkeypatch.setattr(choice, "triton_import_error", lambda: error)
        monkeypatch.setattr(chunked, "LITTLE_ENDIAN", when != "big-endian host")

    return set_to


ROWS = table()


@pytest.mark.parametrize("row", ROWS, ids=[r["line"] for r in ROWS])
def test_each_row_of_the_docs_table_is_what_choose_does(row, machine):
    machine(row["when"])
    for p, dtype, shape in cases(row):
        logits = logits_on(row["device"], SHAPES[shape], DTYPES[dtype])
        got = choose(logits, LossOptions(p=p))
        assert got == row["name"], f"{row['line']}: choose gives {got!r} for p={p} {dtype} {shape}"
        # the implementation the table names can run the call when the switch names it
        assert implementations.cannot_run(got, logits, p) is None


def test_the_table_covers_every_input_once_on_each_machine():
    for when in CONDITIONS:
        seen = {}
        for row in ROWS:
            if row["when"] != when:
                continue
            for case in cases(row):
                key = (row["device"], *case)
                assert key not in seen, f"{row['line']} and {seen[key]} both cover {key}"
                seen[key] = row["line"]
        if when == "":
            every = {(d, p, t, s) for d in ("CPU", "CUDA") for p in (1, 2) for t in DTYPES
                     for s in SHAPES}  # fmt: skip
            assert set(seen) == every, f"no row for {sorted(every - set(seen))}"


def test_use_sets_the_switch_for_a_block_and_restores_it():
    before = implementations.setting()
    with implementations.use("reference"):
        assert implementations.setting() == "reference"
        with implementations.use("chunked"):
            assert choose(torch.zeros(4, 3), LossOptions()) == "chunked"
        assert implementations.setting() == "reference"
        with pytest.raises(KeyError), implementations.use("auto"):
            raise KeyError("a failing block")
        assert implementations.setting() == "reference"
    assert implementations.setting() == before


def test_use_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="auto, reference, chunked, cpu_kernel, triton"):
        with implementations.use("fast"):
            pass


def test_a_forced_implementation_that_cannot_run_the_call_raises(machine):
    machine("")
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with (
        implementations.use("cpu_kernel"),
        pytest.raises(RuntimeError, match="'cpu_kernel'.*p = 2"),
    ):
        hem_loss(x, t, 0.5, p=2)
    with implementations.use("cpu_kernel"), pytest.raises(RuntimeError, match="float16"):
        hem_loss(x.half(), t, 0.5)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with implementations.use("triton"), pytest.raises(RuntimeError, match="'triton'.*CUDA"):
            hem_loss(x, t, 0.5)
    machine("the C++ kernel did not build")
    with implementations.use("cpu_kernel"), pytest.raises(RuntimeError, match="did not build"):
        hem_loss(x, t, 0.5)
    with implementations.use("auto"):  # the automatic choice falls back
        assert choose(x, LossOptions()) == "reference"


def test_the_environment_variable_sets_the_switch_for_the_process():
    code = (
        "import torch, hem_plugins\n"
        "from hem_plugins import implementations as impl\n"
        "print(impl.setting(), impl.choose(torch.zeros(2, 3, 4), impl.LossOptions()))\n"
    )
    env = dict(os.environ, HEM_PLUGINS_IMPLEMENTATION="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["reference", "reference"]
    env["HEM_PLUGINS_IMPLEMENTATION"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "HEM_PLUGINS_IMPLEMENTATION must be one of" in out.stderr


@pytest.mark.parametrize("name", ["auto", "reference", "chunked"])
def test_online_counting_uses_the_kernel_only_where_the_switch_allows_it(name, monkeypatch):
    calls = []
    count = cpu_kernel.count_online
    monkeypatch.setattr(cpu_kernel, "count_online", lambda *a: calls.append(1) or count(*a))
    crit = HEMPlusLoss(num_samples=100)
    x, t = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 2])
    with implementations.use(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit(x, t)
    assert bool(calls) == (name == "auto")
    torch.testing.assert_close(
        crit.class_counts, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    )
