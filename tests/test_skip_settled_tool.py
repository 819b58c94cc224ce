"""tools/skip_settled.py runs end to end and writes its three outputs."""

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


@pytest.mark.slow
def test_tool_writes_json_plot_and_markdown(tmp_path):
    spec = importlib.util.spec_from_file_location("skip_settled_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # dataclasses look their module up there
    spec.loader.exec_module(tool)
    # a smaller profile than smoke, to keep the suite fast; same code path
    tool.PROFILES["test"] = tool.Profile(seeds=1, epochs=6, cl_epochs=1)
    result = tool.main(["--out", str(tmp_path), "--profile", "test"])
    data = json.loads((tmp_path / "skip_settled.json").read_text())
    assert (tmp_path / "skip_settled.png").stat().st_size > 10_000
    md = (tmp_path / "skip_settled.md").read_text()
    assert "--profile test" in md and "| skip_r5 |" in md
    s = data["summary"]
    skips = {"skip_r5", "skip_r3_p0.1", "skip_r10"}
    assert set(s) == {"full", *skips, *(f"full@{k}" for k in skips)}
    full = result["runs"]["full"][0]
    # full training presents every sample every epoch; skipping presents fewer
    assert full["passes"] == data["n_train"] * full["epochs"]
    assert s["skip_r10"]["passes_mean"] < s["full"]["passes_mean"]
    assert 0.0 < s["full"]["acc_mean"] <= 1.0 and 0.0 < s["full"]["auroc_mean"] <= 1.0
    cl = data["continual"]["summary"]
    assert set(cl) == set(tool.CL_VARIANTS)
    assert cl["replay"]["passes_mean"] > cl["naive"]["passes_mean"]  # memory rows are counted
    assert "Continual learning" in md
