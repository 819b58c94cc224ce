"""The adaptive-margins task on the smoke profile: records, report section and plot."""

from __future__ import annotations

import json

import pytest
import torch

from hem_plugins.benchmark.config import load_profile
from hem_plugins.benchmark.runner import run_benchmark
from hem_plugins.benchmark.tasks.adaptive_margins import SEG_CONFIG, TASK

LOSSES = ["hem_plus", "hem_plus_error", "hem_plus_sched", "logit_adjusted"]


@pytest.mark.slow
def test_adaptive_margins_smoke(tmp_path):
    cfg = load_profile("smoke")
    task = cfg["tasks"]["adaptive_margins"]
    task["datasets"] = ["digits"]  # one dataset is enough for the pipeline
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_benchmark(cfg, tmp_path, tasks=["adaptive_margins"], progress=False,
                                work_dir=tmp_path / "runs")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    recs = json.loads((tmp_path / "results.json").read_text())["tasks"]["adaptive_margins"]
    recs = recs["per_seed"]["0"]["records"]
    cls = [r for r in recs if r["group"]["part"] == "classification"]
    segm = [r for r in recs if r["group"]["part"] == "segmentation"]
    assert [r["group"]["loss"] for r in cls] == LOSSES
    assert [r["group"]["loss"] for r in segm] == LOSSES
    for r in cls:
        m = r["metrics"]
        assert 0 <= m["worst_acc"] <= m["balanced_acc"] <= 1
        assert r["extra"]["lr_selected_on"] == "validation"
    for r in segm:
        assert set(r["metrics"]) >= {"mIoU", "rare_mIoU", "mAcc", "train_acc", "diverged"}
        assert len(r["extra"]["per_class_IoU"]) == 11
        assert r["extra"]["config"].endswith(f"_{SEG_CONFIG[r['group']['loss']]}.py")
    report = (tmp_path / "report.md").read_text()
    assert "## Adaptive margins" in report and "worst-class acc %" in report
    assert "rare-digit mIoU %" in report and "HEM+ error-driven vs HEM+" in report
    assert (tmp_path / "adaptive_margins.png").is_file()
    # one unit per (dataset, ratio, loss) and per segmentation grid point
    assert TASK.units(results["tasks"]["adaptive_margins"]["settings"]) == 4 + 4
