"""The smoke profile runs every task end to end and writes report, plots and JSON."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torchattacks")
pytest.importorskip("mnist1d")

from hem_plugins.benchmark.config import load_profile  # noqa: E402
from hem_plugins.benchmark.runner import run_benchmark  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402

CLASSIFICATION = ("openset", "adversarial", "imbalanced", "ablation", "lr_sensitivity")


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path, capfd):
    cfg = load_profile("smoke")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tools/benchmark.py does: tiny models, a shared machine
    try:
        results = run_benchmark(cfg, tmp_path / "out", command="pytest smoke", progress=False,
                                work_dir=tmp_path / "runs")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert list(results["tasks"]) == list(TASKS)
    # A quiet job: one line per task on the terminal; the toolkits' warnings and log lines
    # (Avalanche, mmengine) are in the log file.
    shown = capfd.readouterr()
    lines = [line for line in (shown.out + shown.err).splitlines() if line.strip()]
    assert len(lines) == len(TASKS), lines
    assert all(line.startswith(TASKS[t].title) for line, t in zip(lines, TASKS, strict=True)), lines
    log = (tmp_path / "runs" / "benchmark.log").read_text()
    assert "Warning" in log and "mmengine" in log
    # --out holds the results alone; the runs' folders (mmseg, Avalanche) are in the work dir
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".json", ".md", ".png"}
    assert {"segmentation", "continual"} <= {p.name for p in (tmp_path / "runs").iterdir()}
    # The mmseg runs are evaluated in memory and keep no checkpoint (--keep-checkpoints would).
    assert not list(tmp_path.rglob("*.pth"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for name, res in saved["tasks"].items():
        recs = res["per_seed"]["0"]["records"]
        assert recs, name
        assert len({json.dumps(r["group"], sort_keys=True) for r in recs}) == len(recs)
        if name in CLASSIFICATION:
            assert {r["group"]["dataset"] for r in recs} == {"digits", "mnist1d"}, name
            for r in recs:  # the protocol: health and where the lr was chosen, in every record
                assert 0.0 <= r["metrics"]["train_acc"] <= 1.0, (name, r["group"])
                where = r["extra"]["lr_selected_on"]
                assert (
                    where == "validation"
                    or (name == "lr_sensitivity" and where.startswith("swept"))
                    or (  # 3a's margin sweep trains with the lr HEM chose at the default scale
                        name == "openset"
                        and r["group"].get("margin_scale")
                        and where == f"as {r['group']['dataset']}/hem (validation)"
                    )
                )
        if name in ("openset", "ablation"):
            for r in recs:
                if r["group"]["loss"] in ("mm", "hem", "hem_plus", "hem_nothr"):
                    assert 0.0 <= r["metrics"]["kept_fraction"] <= 1.0, r["group"]
                    assert r["metrics"]["gap_over_margin"] >= 0.0, r["group"]
                    assert len(r["extra"]["gap_over_margin_curve"]) == cfg["train"]["epochs"]
        if name == "openset":  # margin sensitivity: HEM at x0.25 and x4 of the margin scale
            scales = {r["group"].get("margin_scale") for r in recs if r["group"]["loss"] == "hem"}
            assert scales == {None, 500.0, 8000.0}
            lr = {(r["group"]["dataset"], r["group"].get("margin_scale")): r["extra"]["lr"]
                  for r in recs if r["group"]["loss"] == "hem"}  # fmt: skip
            assert all(v == lr[(ds, None)] for (ds, _), v in lr.items())
            for r in recs:  # the logit statistics of every loss, known and unknown samples
                assert {f"kept_hem_{p}" for p in ("known", "unknown")} <= set(r["metrics"])
        losses = {r["group"]["loss"] for r in recs}
        assert losses == set(res["settings"]["losses"]), name
    text = (tmp_path / "out" / "report.md").read_text()
    for task in TASKS.values():
        assert f"## {task.title}" in text
    assert "## Headline (dataset `mnist1d`)" in text
    pngs = {p.name for p in (tmp_path / "out").glob("*.png")}
    expected = {f"{stem}_{ds}.png" for ds in ("digits", "mnist1d")
                for stem in ("openset_msp_hist", "adversarial", "imbalanced_per_class", "lr_sensitivity")}  # fmt: skip
    expected |= {"skip_settled.png", "openset_diagnostics.png"}
    assert expected <= pngs
    for png in pngs:
        assert f"]({png})" in text
    seg = saved["tasks"]["segmentation"]["per_seed"]["0"]["records"]
    assert {r["group"]["dataset"] for r in seg} == {"digitmosaic"}
    assert {r["group"]["loss"] for r in seg} == {
        "ce", "ohem", "focal", "ce_dice", "logit_adjusted", "hem", "hem_plus"
    }  # fmt: skip
    for r in seg:  # mmseg's IoUMetric on the test images, in percent; health as fractions
        assert set(r["metrics"]) == {"mIoU", "mAcc", "aAcc", "train_acc", "diverged"}
        assert all(0.0 <= r["metrics"][k] <= 100.0 for k in ("mIoU", "mAcc", "aAcc")), r
        assert 0.0 <= r["metrics"]["train_acc"] <= 1.0 and r["metrics"]["diverged"] in (0.0, 1.0)
        assert r["extra"]["lr_selected_on"] == "validation"
        assert len(r["extra"]["selection"]["grid"]) == 2
    assert "segmentation_digitmosaic.png" in pngs
    anom = saved["tasks"]["anomaly_segmentation"]["per_seed"]["0"]["records"]
    assert [r["group"]["loss"] for r in anom] == ["ce", "hem", "hem_plus", "logitnorm"]
    for r in anom:  # IoUMetric and AnomalyMetric on the test mosaics, percent
        assert 0.0 <= r["metrics"]["max_logit/AUROC"] <= 100.0, r
        assert 0.0 <= r["metrics"]["train_acc"] <= 1.0 and "score_maps" in r["extra"]
    assert "anomaly_segmentation.png" in pngs
    cl = saved["tasks"]["continual"]["per_seed"]["0"]["records"]
    assert len(cl) == 36  # 3 scenarios x Naive, Replay, EWC, LwF x CE, HEM, HEM+
    for r in cl:  # Avalanche's EvaluationPlugin, as fractions
        assert 0.0 <= r["metrics"]["final_acc"] <= 1.0, r
        assert -1.0 <= r["metrics"]["forgetting"] <= 1.0, r
        assert 0.0 <= r["metrics"]["train_acc"] <= 1.0, r
        assert r["extra"]["lr_selected_on"] == "validation", r
    assert "continual_scenarios.png" in pngs
    assert "3d final acc % (Replay, SplitDigits)" in text
    assert "3e mIoU % (DigitMosaic)" in text
    with pytest.raises(ValueError, match="unknown task"):
        run_benchmark(cfg, tmp_path, tasks=["no_such_task"], progress=False)
