"""The README's Avalanche quick start is ``tools/avalanche_quickstart.py``, and running it
prints what the README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tools" / "avalanche_quickstart.py"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README[README.index("### Avalanche") : README.index("## What the benchmark measured")]
LINE = re.compile(r"^after experience (\d): test accuracy (\d\.\d{3})$")


def _blocks(lang: str) -> list[str]:
    """The fenced blocks of the README's Avalanche section whose info string is ``lang``."""
    blocks, info, lines = [], None, []
    for line in SECTION.splitlines(keepends=True):
        if line.startswith("```"):
            if info is None:
                info, lines = line[3:].strip(), []
            else:
                if info == lang:
                    blocks.append("".join(lines))
                info = None
        elif info is not None:
            lines.append(line)
    return blocks


def test_the_readme_shows_the_example_as_it_is():
    assert _blocks("python") == [EXAMPLE.read_text(encoding="utf-8")]


def test_the_example_uses_keywords_a_batch_of_32_and_a_schedule():
    code = EXAMPLE.read_text(encoding="utf-8")
    for words in ("model=model", "optimizer=optimizer", "criterion=HEMPlusLoss()",
                  "train_mb_size=32", "LRSchedulerPlugin(cosine"):  # fmt: skip
        assert words in code, words


@pytest.mark.slow
def test_the_example_prints_what_the_readme_quotes(tmp_path):
    quoted = [b for b in _blocks("") if b.startswith("after experience")]
    assert len(quoted) == 1
    expected = [LINE.match(x).groups() for x in quoted[0].splitlines()]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    printed = [LINE.match(x).groups() for x in run.stdout.splitlines()]
    assert [k for k, _ in printed] == [k for k, _ in expected] == list("01234")
    # The final accuracy the README quotes (seed 0), to a point; the full log is in the cwd.
    assert abs(float(printed[-1][1]) - float(expected[-1][1])) <= 0.01, printed
    assert float(printed[-1][1]) >= 0.93
    assert "Top1_Acc_Stream/eval_phase/test_stream" in (tmp_path / "avalanche_log.txt").read_text()
