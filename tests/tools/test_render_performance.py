"""tools/render_performance.py: docs/performance.md's CPU figures are the rendering of the
committed timing JSONs under benchmarks/ (a number typed into a block, or a JSON rerun without
rendering, fails here), the page shows the command each JSON was written by, and a missing
JSON or block fails clearly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "render_performance.py"
DOC = ROOT / "docs" / "performance.md"
#: The JSONs the page is rendered from.
JSONS = [
    "bench_loss_small_cpu.json",
    "bench_loss_small_cpu_1thread.json",
    "bench_loss_cpu.json",
    "bench_loss_cpu_bfloat16.json",
    "bench_e2e_digitmosaic_cpu.json",
    "bench_e2e_fcn_r18_cpu.json",
]
BLOCKS = ["kept", "small-tables", "small-runs", "large", "e2e", "small-call"]


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_committed_page_is_the_rendering_of_the_committed_jsons():
    run = _tool("--check")
    assert run.returncode == 0, (
        f"docs/performance.md is not the rendering of benchmarks/*.json (a number typed into a "
        f"perf: block, or a JSON rerun without `python tools/render_performance.py`):\n"
        f"{run.stdout}{run.stderr}"
    )


def test_every_block_is_filled_and_says_where_it_comes_from():
    text = DOC.read_text(encoding="utf-8")
    for name in BLOCKS:
        start, end = f"<!-- perf:{name}:start -->", f"<!-- perf:{name}:end -->"
        assert text.count(start) == 1 and text.count(end) == 1, name
        body = text.split(start, 1)[1].split(end, 1)[0]
        assert "by `python tools/render_performance.py`" in body.splitlines()[1], name
    # the prose that quotes the JSONs is rendered too
    quoted = {
        "kept": "of CE's at the large shapes below",
        "small-runs": "for these runs)",
        "large": "*Time* is the median of the per-pair ratios of",
        "e2e": "interleaved runs on",
        "small-call": "against CE per MLP training step of about",
    }
    for name, phrase in quoted.items():
        assert text.count(phrase) == 1, phrase
        assert phrase in text.split(f"<!-- perf:{name}:start -->")[1].split(f"perf:{name}:end")[0]


def test_a_typed_number_is_caught_and_rendering_restores_the_page(tmp_path):
    doc = tmp_path / "performance.md"
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- perf:large:start -->")[1]
    row = [line for line in block.splitlines() if line.startswith("| ")][2]  # the first row
    typed = text.replace(row, row[:-2] + "9 |")  # a digit typed into its last cell
    doc.write_text(typed, encoding="utf-8")
    run = _tool("--check", "--doc", str(doc))
    assert run.returncode == 1 and f"-{row[:-2]}9 |" in run.stdout and f"+{row}" in run.stdout
    assert doc.read_text(encoding="utf-8") == typed  # --check writes nothing
    assert _tool("--doc", str(doc)).returncode == 0
    assert doc.read_text(encoding="utf-8") == text


def test_a_missing_json_fails_naming_it_and_leaves_the_page(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    for name in JSONS[:-1]:
        shutil.copy(ROOT / "benchmarks" / name, bench / name)
    doc = tmp_path / "performance.md"
    shutil.copy(DOC, doc)
    run = _tool("--doc", str(doc), "--benchmarks", str(bench))
    assert run.returncode == 2
    assert f"{bench / JSONS[-1]} does not exist" in run.stderr, run.stderr
    assert doc.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")


def test_a_missing_block_fails_naming_it(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(DOC.read_text(encoding="utf-8").replace("<!-- perf:e2e:end -->\n", ""))
    run = _tool("--check", "--doc", str(doc))
    assert run.returncode == 2 and "<!-- perf:e2e:end -->" in run.stderr, run.stderr


def _shown_commands() -> set[str]:
    """The commands of the page's plain code blocks, continued lines joined, without the
    ``.venv/bin/python`` before each."""
    blocks, block = [], None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if block is None:
                block = [] if line == "```" else ["<other>"]
            else:
                blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    joined = [re.sub(r"\\\n\s*", " ", b) for b in blocks if not b.startswith("<other>")]
    return {" ".join(c.split()) for b in joined for line in b.splitlines()
            for c in line.split(".venv/bin/python ") if c.strip()}  # fmt: skip


@pytest.mark.parametrize("name", JSONS)
def test_the_page_shows_the_command_that_wrote_each_json(name):
    """The command above each table is the one in its JSON's meta."""
    command = json.loads((ROOT / "benchmarks" / name).read_text())["meta"]["command"]
    assert command in _shown_commands(), (
        f"benchmarks/{name} was written by `{command}`, which docs/performance.md does not show"
    )
