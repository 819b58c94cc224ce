"""tools/skip_settled.py (a thin CLI over the skip_settled benchmark task) writes its outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("avalanche")

TOOL = Path(__file__).resolve().parents[1] / "tools" / "skip_settled.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("skip_settled_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.slow
def test_tool_writes_json_plot_and_markdown(tmp_path):
    tool = _load_tool()
    args = ["--out", str(tmp_path), "--profile", "smoke", "--seeds", "0", "--no-continual"]
    result = tool.main(args)
    data = json.loads((tmp_path / "skip_settled.json").read_text())
    assert (tmp_path / "skip_settled.png").stat().st_size > 10_000
    md = (tmp_path / "skip_settled.md").read_text()
    assert "--profile smoke" in md and "| skip_r5 |" in md and "Continual learning" not in md
    recs = data["per_seed"]["0"]["records"]
    parts = {r["group"]["part"] for r in recs}
    assert parts == {"classification"} and data["settings"]["continual"] is None
    full = next(r for r in recs if r["group"]["variant"] == "full")
    assert full["metrics"]["passes"] == full["extra"]["n_train"] * full["metrics"]["epochs"]
    assert result["seeds"] == [0]
    # --render: the report again from the JSON alone, into another folder
    again = tool.main(
        ["--render", str(tmp_path / "skip_settled.json"), "--out", str(tmp_path / "r")]
    )
    assert again["per_seed"] == data["per_seed"]
    assert (tmp_path / "r" / "skip_settled.md").read_text() == md


def test_tool_needs_an_output_folder():
    with pytest.raises(SystemExit, match="--out"):
        _load_tool().main(["--profile", "smoke"])


@pytest.mark.slow
def test_plain_writes_paired_figures(tmp_path):
    """--plain: SkipSettledPlugin() with no set-up vs without, per strategy, in one small JSON."""
    out = tmp_path / "plain.json"
    result = _load_tool().main(
        ["--plain", "--seeds", "0", "--epochs", "4", "--json", str(out), "--threads", "1"]
    )
    data = json.loads(out.read_text())
    assert data["seeds"] == [0] and set(data["strategies"]) == {"naive", "naive+replay"}
    naive = data["strategies"]["naive"]
    n_train = data["settings"]["n_train"]
    assert naive["runs"]["without"][0]["passes"] == 4 * n_train
    assert 0 < naive["passes_saved"] < 1
    assert naive["runs"]["with"][0]["unidentified"] == 0
    replay = data["strategies"]["naive+replay"]["runs"]["with"][0]
    assert replay["unidentified"] > 0  # the buffer's rows carry no ids: presented, counted
    assert "--plain" in data["meta"]["command"] and result["seeds"] == [0]
