"""The margin-scaling task: the fit of the exponent, the data it trains on, and the task end to
end on the smoke profile (records, the fit in results.json, report section and plot)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hem_plugins.benchmark.config import load_profile
from hem_plugins.benchmark.data import Split
from hem_plugins.benchmark.runner import run_benchmark
from hem_plugins.benchmark.tasks import BEYOND_TASKS, TUNE_TASKS
from hem_plugins.benchmark.tasks.margin_scaling import TASK, fit_exponent, run_cfg, subsets


def test_fit_recovers_a_known_exponent_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    n = np.repeat([100, 300, 1000, 3000, 10000], 3).astype(float)
    b, a = -0.3, 1.2
    mu = np.exp(a + b * np.log(n) + rng.normal(0, 0.1, len(n)))
    f = fit_exponent(n.tolist(), mu.tolist())
    assert f["exponent_low"] < b < f["exponent_high"]
    assert abs(f["exponent"] - b) < 0.05 and abs(f["intercept"] - a) < 0.4
    assert f["exponent_high"] - f["exponent_low"] < 0.2  # 15 points, noise 0.1: a tight interval
    assert f["points"] == 15 and not f["paper_inside"]  # -0.5 is far outside
    # a 95 % interval: it holds the true exponent in about 95 % of repeated draws
    hits = [fit_exponent(n, np.exp(a + b * np.log(n) + rng.normal(0, 0.1, len(n))))
            for _ in range(400)]  # fmt: skip
    coverage = np.mean([h["exponent_low"] < b < h["exponent_high"] for h in hits])
    assert 0.92 <= coverage <= 0.98, coverage
    # the paper's rule itself (with noise) is inside its interval
    paper = np.sqrt(2000 / n) * np.exp(rng.normal(0, 0.1, len(n)))
    g = fit_exponent(n.tolist(), paper.tolist())
    assert g["paper_inside"] and g["exponent_low"] < -0.5 < g["exponent_high"]
    assert math.isclose(g["scale"], 2000, rel_tol=0.5)
    assert g["scale_at_paper_exponent_low"] < 2000 < g["scale_at_paper_exponent_high"]
    assert f["scale_at_paper_exponent_high"] < 2000  # b = -0.3 and a = 1.2: margins too small


def test_fit_exact_paper_points_hold_despite_a_zero_width_interval():
    n = [50.0, 150.0, 450.0]
    f = fit_exponent(n, [math.sqrt(2000 / x) * 3 for x in n])
    assert math.isclose(f["exponent"], -0.5) and f["paper_inside"]


@pytest.mark.parametrize(
    ("n", "mu", "match"),
    [([100, 100, 100], [1, 2, 3], "distinct sizes"), ([100, 200], [1, 2], ">= 3 points"),
     ([100, 200, 300], [1, -2, 3], "positive"), ([100, 200], [1, 2, 3], "one length")],
)  # fmt: skip
def test_fit_rejects_bad_points(n, mu, match):
    with pytest.raises(ValueError, match=match):
        fit_exponent(n, mu)


def _split(n: int, classes: int = 4) -> Split:
    y = torch.arange(n) % classes
    x = torch.rand(n, 3)
    return Split("toy", x, y, x[:10], y[:10], classes)


def test_subsets_are_nested_disjoint_from_validation_and_sized():
    split = _split(400)
    x_val, y_val, parts = subsets(split, 80, [20, 60, 300], seed=3)
    assert len(y_val) == 80 and torch.bincount(y_val).tolist() == [20] * 4  # stratified
    val_rows = {tuple(r.tolist()) for r in x_val}
    assert [p.n_train for p in parts.values()] == [20, 60, 300]
    small, mid, big = (parts[k].x_train for k in (20, 60, 300))
    assert torch.equal(mid[:20], small) and torch.equal(big[:60], mid)  # nested
    assert not val_rows & {tuple(r.tolist()) for r in big}
    with pytest.raises(ValueError, match="exceed"):
        subsets(split, 80, [321], seed=3)
    with pytest.raises(ValueError, match="val_size"):
        subsets(split, 400, [10], seed=3)


def test_every_size_gets_the_same_number_of_steps():
    s = {"train": {"epochs": 30, "lr": 0.1}, "steps": 400, "batch_size": 64, "lr": 0.03}
    assert run_cfg(s, "digits", 100)["epochs"] == 200  # 2 batches per epoch
    assert run_cfg(s, "digits", 6400)["epochs"] == 4
    assert run_cfg(s, "digits", 100000)["epochs"] == 1  # at least one epoch
    assert run_cfg(s, "digits", 100)["lr"] == 0.03


def test_registered_in_beyond_not_in_tune():
    assert "margin_scaling" in BEYOND_TASKS and "margin_scaling" not in TUNE_TASKS


@pytest.mark.slow
def test_margin_scaling_smoke(tmp_path, one_thread):
    cfg = load_profile("smoke")
    run_benchmark(cfg, tmp_path, tasks=["margin_scaling"], progress=False,
                  work_dir=tmp_path / "runs")  # fmt: skip
    res = json.loads((tmp_path / "results.json").read_text())["tasks"]["margin_scaling"]
    s = res["settings"]
    recs = res["per_seed"]["0"]["records"]
    assert [(r["group"]["dataset"], r["group"]["n_train"]) for r in recs] == [
        (ds, n) for ds in s["datasets"] for n in s["sizes"][ds]
    ]
    for r in recs:
        m, e = r["metrics"], r["extra"]
        assert len(e["val_acc"]) == len(e["margins"]) == len(s["factors"])
        assert m["best_margin"] in e["margins"]
        assert m["val_acc_best"] == max(e["val_acc"])  # chosen on validation
        paper = math.sqrt(2000 / r["group"]["n_train"])
        assert math.isclose(e["paper_margin"], paper)
        assert math.isclose(m["best_margin"], m["best_factor"] * paper)
        assert e["at_edge"] == (m["best_factor"] in (min(s["factors"]), max(s["factors"])))
    fits = res["aggregate"]["fits"]
    assert set(fits) == set(s["datasets"])
    for f in fits.values():
        assert f["exponent_low"] <= f["exponent"] <= f["exponent_high"]
        assert f["points"] == 3
        lo, mid, hi = (f[f"scale_at_paper_exponent{k}"] for k in ("_low", "", "_high"))
        assert 0 < lo <= mid <= hi
    report = (tmp_path / "report.md").read_text()
    assert "## The margin's scaling law" in report and "exponent b [95 %]" in report
    assert (tmp_path / "margin_scaling.png").is_file()
    assert TASK.units(s) == 6 * len(s["factors"])


@pytest.mark.parametrize(
    ("change", "match"),
    [({"factors": [0.5, 2.0]}, "must hold 1"), ({"losses": ["ce"]}, "losses must be")],
)
def test_bad_settings_are_named(change, match):
    from hem_plugins.benchmark.tasks.base import Context

    s = {**load_profile("smoke")["tasks"]["margin_scaling"], "seeds": [0], **change}
    with pytest.raises(ValueError, match=match):
        TASK.run_seed(s, 0, Context())
