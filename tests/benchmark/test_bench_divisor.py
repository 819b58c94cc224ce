"""The divisor task (HEM with divisor 'kept', 'rows', 'floor'; docs/divisor.md) on the smoke
profile: every part's records, the f grid where the lr is selected, the tuned f, the report."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mnist1d")

from hem_plugins.benchmark.config import load_profile  # noqa: E402
from hem_plugins.benchmark.protocol import tuned_from_results  # noqa: E402
from hem_plugins.benchmark.runner import run_benchmark  # noqa: E402
from hem_plugins.benchmark.tasks.divisor import part_settings  # noqa: E402
from hem_plugins.functional import DIVISOR_FLOOR  # noqa: E402

LOSSES = {"hem", "hem_rows", "hem_floor"}


def run(cfg, out):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_benchmark(cfg, out, tasks=["divisor"], command="pytest", progress=False,
                             work_dir=out / "runs")  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_divisor_task_on_the_smoke_profile(tmp_path):
    cfg = load_profile("smoke")
    cfg["tasks"]["divisor"]["parts"] = ["openset", "imbalanced", "lr_sensitivity"]  # no mmseg
    results = run(cfg, tmp_path)
    recs = json.loads((tmp_path / "results.json").read_text())["tasks"]["divisor"]
    recs = recs["per_seed"]["0"]["records"]
    by_part = {}
    for r in recs:
        by_part.setdefault(r["group"]["part"], []).append(r)
    assert set(by_part) == {"openset", "imbalanced", "lr_sensitivity"}
    for part, rs in by_part.items():
        assert {r["group"]["loss"] for r in rs} == LOSSES, part
        for r in rs:
            assert 0.0 <= r["metrics"]["train_acc"] <= 1.0
    for r in by_part["openset"] + by_part["imbalanced"]:
        assert 0.0 <= r["metrics"]["kept_fraction"] <= 1.0
        sel = r["extra"]["selection"]
        assert sel["lr_selected_on"] == "validation" and sel["key"].startswith(r["group"]["part"])
        if r["group"]["loss"] == "hem_floor":  # f chosen on validation data with the lr
            assert {p[0]["divisor_floor"] for p in sel["grid"]} == {0.1, 1.0}
    assert {"acc", "auroc_msp", "auroc_mls", "gap_over_margin"} <= set(
        by_part["openset"][0]["metrics"]
    )
    assert {r["group"]["lr"] for r in by_part["lr_sensitivity"]} == {0.1}
    text = (tmp_path / "report.md").read_text()
    assert "## HEM's divisor" in text and "### Choice of f (validation data)" in text
    assert "rows − kept" in text and "](divisor.png)" in text
    assert (tmp_path / "divisor.png").is_file()

    # tuned mode: hem_floor runs at the default f with the lr best at that f on validation
    tuned = tuned_from_results(results)["divisor"]
    assert "openset/digits/hem_floor" in tuned
    cfg = load_profile("smoke")
    cfg["selection"] = {"mode": "tuned", "file": "x"}
    cfg["tuned"] = {"divisor": tuned}
    sub = part_settings(cfg["tasks"]["divisor"] | {"selection": cfg["selection"],
                                                   "tuned": cfg["tuned"]}, "openset")  # fmt: skip
    entry = sub["tuned"]["openset"]["digits/hem_floor"]
    assert set(entry["chosen"]) == {"lr"}
    assert sub["loss_options"]["divisor_floor"] == DIVISOR_FLOOR


def test_bad_part_is_named():
    cfg = load_profile("smoke")
    cfg["tasks"]["divisor"]["parts"] = ["openset", "adversarial"]
    with pytest.raises(ValueError, match="unknown part"):
        run_benchmark(cfg, "/tmp/unused_divisor", tasks=["divisor"], progress=False,
                      work_dir="/tmp/unused_divisor/runs")  # fmt: skip
