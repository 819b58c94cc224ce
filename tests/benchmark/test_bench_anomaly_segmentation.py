"""The anomaly-segmentation task: its records, verdicts, lr reuse, figure data and report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hem_plugins.benchmark import protocol
from hem_plugins.benchmark.config import load_profile, task_settings
from hem_plugins.benchmark.tasks import BEYOND_TASKS, TUNE_TASKS
from hem_plugins.benchmark.tasks.anomaly_segmentation import (
    OWN_LR,
    TASK,
    lr_settings,
    metric_names,
    own_lr_settings,
    pack_array,
    record_metrics,
    unpack_array,
    verdict_lines,
)
from hem_plugins.benchmark.tasks.sections import aggregate

TEST = {"mIoU": 60.0, "mAcc": 70.0, "aAcc": 95.0,
        **{k: 50.0 + i for i, k in enumerate(metric_names())}}  # fmt: skip


def test_record_metrics_keeps_every_score_and_names_a_missing_one():
    m = record_metrics(TEST, {"mAcc": 80.0}, diverged=False)
    assert set(m) == {"mIoU", "mAcc", *metric_names(), "train_acc", "diverged"}
    assert m["train_acc"] == pytest.approx(0.8) and m["diverged"] == 0.0
    assert m["energy/FPR95"] == TEST["energy/FPR95"]
    bad = {k: v for k, v in TEST.items() if k != "max_logit/AUROC"}
    with pytest.raises(RuntimeError, match="max_logit/AUROC"):
        record_metrics(bad, {"mAcc": 80.0}, diverged=False)
    with pytest.raises(RuntimeError, match="mAcc"):
        record_metrics(TEST, {}, diverged=False)


def _result(auroc: dict[str, list[float]], train_acc: float = 0.9) -> dict:
    per_seed = {}
    for seed in range(3):
        recs = []
        for loss, vals in auroc.items():
            metrics = {**{k: 50.0 for k in metric_names()}, "mIoU": 60.0, "mAcc": 70.0,
                       "train_acc": train_acc, "diverged": 0.0}  # fmt: skip
            metrics["msp/AUROC"] = metrics["max_logit/AUROC"] = vals[seed]
            recs.append({"group": {"dataset": "digitmosaic_anomaly", "loss": loss},
                         "metrics": metrics, "extra": {"lr": 0.003}})  # fmt: skip
        per_seed[str(seed)] = {"records": recs}
    settings = {"losses": list(auroc), "iters": 1200, "batch_size": 4, "min_train_acc": 0.5,
                "config": "configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_{loss}.py",
                "optimizer": {"type": "AdamW"}, "selection": {"mode": "tuned", "file": "t.json"}}  # fmt: skip
    return {"settings": settings, "seeds": [0, 1, 2], "per_seed": per_seed}


def test_verdicts_pair_by_seed_and_follow_the_protocol():
    # HEM above CE in every seed by a steady 5 points: agrees; HEM+ around CE: no difference
    res = _result({"ce": [80.0, 85.0, 90.0], "hem": [85.0, 90.1, 94.9],
                   "hem_plus": [82.0, 83.0, 91.0]})  # fmt: skip
    lines = verdict_lines(aggregate(res, ("loss",)), 0.5)
    assert len(lines) == 4  # 2 claims x (MSP, max logit)
    hem = [line for line in lines if line.startswith("- HEM vs CE")]
    assert all("**agrees**" in line for line in hem), hem
    plus = [line for line in lines if line.startswith("- HEM+ vs CE")]
    assert all(f"**{protocol.NO_DIFFERENCE}**" in line for line in plus), plus
    # HEM below CE in every seed: disagrees
    res = _result({"ce": [85.0, 90.1, 94.9], "hem": [80.0, 85.0, 90.0]})
    assert all("**disagrees**" in x for x in verdict_lines(aggregate(res, ("loss",)), 0.5))
    # unhealthy runs (train mAcc under the threshold) are named, no verdict drawn
    res = _result({"ce": [80.0, 85.0, 90.0], "hem": [85.0, 90.1, 94.9]}, train_acc=0.2)
    lines = verdict_lines(aggregate(res, ("loss",)), 0.5)
    assert lines and all("not decided" in x and "did not train" in x for x in lines), lines


def test_the_lr_is_3e_s_and_the_task_is_beyond_not_tune():
    assert "anomaly_segmentation" in BEYOND_TASKS
    assert "anomaly_segmentation" not in TUNE_TASKS  # selects nothing of its own
    key = "digitmosaic/iters=1200/hem"
    tuned = {"segmentation": {key: {"chosen": {"lr": 0.003}}}}
    settings = {"selection": {"mode": "tuned", "file": "t.json"}, "tuned": tuned}
    params, record, run = protocol.select(settings, TASK.name, key, {}, None, "val mIoU %")
    assert params == {"lr": 0.003} and run is None and record["lr_selected_on"] == "t.json"
    # 3e's entry is the one value of the setting: an own entry beside it is flagged
    both = {**tuned, TASK.name: {key: {"chosen": {"lr": 0.01}}}}
    assert any("held twice" in p for p in protocol.check_tuned(both))
    cfg = load_profile("beyond")
    beyond = task_settings(cfg, "anomaly_segmentation")
    segm = task_settings(cfg, "segmentation")
    for k in ("optimizer", "batch_size", "min_train_acc"):
        assert beyond[k] == segm[k], k  # 3e's recipe
    assert beyond["max_seeds"] == 3
    assert beyond["losses"] == ["ce", "hem", "hem_plus", "logitnorm"]
    # fewer iterations than 3e (the budget), the lr of 3e's key at 3e's iterations
    assert beyond["iters"] < segm["iters"] == beyond["lr_iters"]
    assert lr_settings(beyond)["iters"] == segm["iters"]
    assert lr_settings({**beyond, "selection": {"mode": "validation"}})["iters"] == beyond["iters"]
    with pytest.raises(ValueError, match="lr_iters"):
        lr_settings({**beyond, "lr_iters": 0})
    # the runner's settings carry 3e's tuned entries (the owner's), which the runs read
    for loss in (x for x in beyond["losses"] if x not in OWN_LR):
        key = f"digitmosaic/iters={segm['iters']}/{loss}"
        params, _, _ = protocol.select(lr_settings(beyond), TASK.name, key, {}, None, "m")
        assert params == segm["tuned"]["segmentation"][key]["chosen"], loss


def test_logitnorm_lr_is_chosen_on_validation_inside_the_task():
    cfg = load_profile("beyond")
    beyond = task_settings(cfg, "anomaly_segmentation")
    segm = task_settings(cfg, "segmentation")
    assert "logitnorm" not in segm["losses"]  # 3e has no LogitNorm lr to read
    own = own_lr_settings(beyond, "logitnorm")
    # validation at the task's own iterations over its own lr grid, whatever the profile's mode
    assert own["selection"]["mode"] == "validation" and beyond["selection"]["mode"] == "tuned"
    assert own["selection"]["grid"] == {"lr": beyond["own_lr"]["logitnorm"]}
    assert own["iters"] == beyond["iters"]
    assert protocol.val_fraction(own) == protocol.val_fraction(beyond)
    # units: one training per loss with 3e's lr, one per lr of LogitNorm's grid
    assert TASK.units(beyond) == 3 + len(beyond["own_lr"]["logitnorm"])
    # the selection runs every grid point and keeps the best (no tuned file read)
    key = f"digitmosaic/iters={beyond['iters']}/logitnorm"
    scores = {0.003: 30.0, 0.01: 35.0}
    params, record, run = protocol.select(own, TASK.name, key, own["selection"]["grid"],
                                          lambda p: (scores[p["lr"]], p["lr"]), "m")  # fmt: skip
    assert params == {"lr": 0.01} and run == 0.01 and record["lr_selected_on"] == "validation"
    for bad in ({}, {"logitnorm": []}, {"logitnorm": [0.0]}, {"logitnorm": "0.01"}):
        with pytest.raises(ValueError, match="own_lr"):
            own_lr_settings({**beyond, "own_lr": bad}, "logitnorm")


def test_hem_vs_logitnorm_verdict_and_unhealthy_logitnorm_named(tmp_path):
    res = _result({"ce": [80.0, 85.0, 90.0], "hem": [85.0, 90.1, 94.9],
                   "logitnorm": [80.0, 85.0, 90.0]})  # fmt: skip
    lines = verdict_lines(aggregate(res, ("loss",)), 0.5)
    ln = [line for line in lines if line.startswith("- HEM vs LogitNorm")]
    assert len(ln) == 2 and all("**agrees**" in x for x in ln), lines
    # a LogitNorm run that does not train: named, no verdict against it
    for rec in res["per_seed"]["1"]["records"]:
        if rec["group"]["loss"] == "logitnorm":
            rec["metrics"]["train_acc"] = 0.1
    lines = verdict_lines(aggregate(res, ("loss",)), 0.5)
    ln = [line for line in lines if line.startswith("- HEM vs LogitNorm")]
    assert ln and all("not decided" in x and "did not train" in x for x in ln), ln
    assert all("**agrees**" in x for x in lines if x.startswith("- HEM vs CE"))
    res["settings"]["own_lr"] = {"logitnorm": [0.003, 0.01]}
    text = TASK.render(res, tmp_path)
    assert "| LogitNorm | 2/3" in text and "| HEM | 3/3" in text
    assert "LogitNorm's (3e does not train it)" in text and "from 0.003, 0.01" in text


def test_pack_array_round_trips_and_refuses_what_does_not_fit():
    a = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    b = unpack_array(json.loads(json.dumps(pack_array(a, "float16"))))
    assert b.shape == (64, 64) and np.abs(b - a).max() < 1e-3
    img = np.arange(48, dtype=np.int64).reshape(4, 4, 3)
    assert (unpack_array(pack_array(img, "uint8")) == img).all()
    with pytest.raises(ValueError, match="uint8"):
        pack_array(np.array([254, 256]), "uint8")
    with pytest.raises(ValueError, match="dtype"):
        pack_array(a, "float64")


def test_render_writes_the_table_verdicts_and_figure(tmp_path):
    res = _result({"ce": [80.0, 85.0, 90.0], "hem": [85.0, 90.1, 94.9],
                   "hem_plus": [82.0, 83.0, 91.0]})  # fmt: skip
    label = np.zeros((8, 8), dtype=np.uint8)
    label[2:4, 2:4] = 254
    maps = {"image": pack_array(np.zeros((8, 8, 3)), "uint8"), "label": pack_array(label, "uint8"),
            "msp": pack_array(np.full((8, 8), 0.9), "float16"),
            "max_logit": pack_array(np.full((8, 8), 3.0), "float16")}  # fmt: skip
    for rec in res["per_seed"]["0"]["records"]:
        rec["extra"]["score_maps"] = maps
    text = TASK.render(res, tmp_path)
    assert text.startswith(f"## {TASK.title}")
    assert "read from `t.json`" in text and "| HEM+ | 3/3 | 0.003 |" in text
    assert text.count("(claim: ") == 4
    assert (
        "](anomaly_segmentation.png)" in text and (tmp_path / "anomaly_segmentation.png").is_file()
    )
    rows = TASK.summary(res)
    assert [r[0].split(":")[1].split(" rejects")[0].strip() for r in rows] == ["HEM", "HEM+"]


@pytest.mark.slow
def test_anomaly_segmentation_smoke(tmp_path, one_thread):
    cfg = load_profile("smoke")
    from hem_plugins.benchmark.runner import run_benchmark

    run_benchmark(cfg, tmp_path, tasks=["anomaly_segmentation"], progress=False,
                  work_dir=tmp_path / "runs")  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())["tasks"]["anomaly_segmentation"]
    recs = saved["per_seed"]["0"]["records"]
    assert [r["group"]["loss"] for r in recs] == ["ce", "hem", "hem_plus", "logitnorm"]
    ln = recs[-1]["extra"]
    assert ln["selection"]["lr_selected_on"] == "validation" and ln["lr"] == 0.01
    for r in recs:
        assert all(0.0 <= r["metrics"][k] <= 100.0 for k in ("mIoU", *metric_names())), r
        assert 0.0 <= r["metrics"]["train_acc"] <= 1.0
        assert r["extra"]["lr_selected_on"] == "validation"
        maps = r["extra"]["score_maps"]
        label = unpack_array(maps["label"])
        assert (label == 254).any() and unpack_array(maps["image"]).shape == (*label.shape, 3)
        msp = unpack_array(maps["msp"])
        assert msp.shape == label.shape and ((msp > 0) & (msp <= 1.001)).all()
    assert (tmp_path / "anomaly_segmentation.png").is_file()
