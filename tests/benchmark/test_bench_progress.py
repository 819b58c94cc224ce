"""The benchmark's progress display: plain, whole lines when stdout is not a terminal (a CI
log, a pipe), a rich bar on a terminal, and the runner's use of it."""

from __future__ import annotations

import io
import re

import pytest

pytest.importorskip("rich")

from hem_plugins.benchmark import runner  # noqa: E402
from hem_plugins.benchmark.progress import ProgressDisplay  # noqa: E402

LINE = re.compile(r"^\[(\d+)/(\d+), \d\d:\d\d:\d\d\] (.+)$")


def test_not_a_terminal_gives_plain_whole_lines():
    out = io.StringIO()
    description = "segmentation hem_plus lr 0.05 2000 it seed 0 " + "x" * 80  # > 80 columns
    with ProgressDisplay(3, file=out, interval=0) as shown:
        assert shown.plain
        for k in range(3):
            shown.advance(f"{description} {k}")
        shown.line("3e. Semantic segmentation (DigitMosaic, mmseg): 4 agrees (12 s)")
    lines = out.getvalue().splitlines()
    assert [LINE.match(x).groups() for x in lines[:3]] == [
        (str(k + 1), "3", f"{description} {k}") for k in range(3)
    ]
    assert lines[3] == "3e. Semantic segmentation (DigitMosaic, mmseg): 4 agrees (12 s)"
    assert "\x1b" not in out.getvalue() and "…" not in out.getvalue()


def test_plain_lines_are_at_most_one_per_interval_the_first_and_last_always():
    out = io.StringIO()
    with ProgressDisplay(5, file=out, interval=3600) as shown:
        for k in range(5):
            shown.advance(f"unit {k}")
    assert [LINE.match(x).group(3) for x in out.getvalue().splitlines()] == ["unit 0", "unit 4"]


def test_disabled_shows_only_the_lines():
    out = io.StringIO()
    with ProgressDisplay(2, file=out, enabled=False, interval=0) as shown:
        shown.advance("unit 0")
        shown.line("done")
    assert out.getvalue() == "done\n"


def test_a_terminal_gets_the_bar(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: treat the stream as a terminal
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    out = io.StringIO()
    with ProgressDisplay(2, file=out, interval=0) as shown:
        assert not shown.plain
        shown.advance("unit 0")
        shown.advance("unit 1")
    assert "2/2" in out.getvalue() and "━" in out.getvalue()


class _Counting:
    """A task of three units that records the context it is given."""

    name, title = "counting", "Counting task"

    def __init__(self):
        self.contexts = []

    def units(self, settings):
        return 3

    def run_seed(self, settings, seed, ctx):
        self.contexts.append(ctx)
        for k in range(3):
            ctx.advance(f"counting unit {k} seed {seed}")
        return {"records": []}

    def summary(self, result):
        return []


@pytest.mark.parametrize("keep", [False, True])
def test_the_runner_prints_plain_progress_and_passes_keep_checkpoints(
    keep, tmp_path, capfd, monkeypatch
):
    task = _Counting()
    monkeypatch.setitem(runner.TASKS, "counting", task)
    monkeypatch.setattr(runner, "render_report", lambda results, out: None)
    cfg = {"profile": "test", "seeds": [0], "tasks": {"counting": {}}}
    runner.run_benchmark(cfg, tmp_path, tasks=["counting"], keep_checkpoints=keep,
                         work_dir=tmp_path / "runs")  # fmt: skip
    lines = capfd.readouterr().out.splitlines()
    # Not a terminal: the first and last units (within one 10 s interval) and the task's line.
    assert [LINE.match(x).group(3) for x in lines[:2]] == [
        "counting unit 0 seed 0",
        "counting unit 2 seed 0",
    ]
    assert lines[2:] == ["Counting task: done (0 s)"]
    assert task.contexts[0].keep_checkpoints is keep
    assert task.contexts[0].work_dir == tmp_path / "runs"  # the runs' folders, not --out
