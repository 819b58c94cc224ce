"""3a (openset): the logit statistics of every loss, the margin sweep at HEM's lr, and the
section that says what the recorded numbers support."""

from __future__ import annotations

import math

import pytest
import torch

from hem_plugins.benchmark.config import load_profile, task_settings
from hem_plugins.benchmark.tasks.base import Context
from hem_plugins.benchmark.tasks.open_set_runs import logit_stats
from hem_plugins.benchmark.tasks.openset import TASK
from hem_plugins.settled import kept_mask

STATS = ("gap", "gap_hem_margins", "kept_hem", "settled_hem")


def test_logit_stats_known_and_unknown():
    z = torch.tensor([[3.0, 0.0, 1.0], [1.0, 0.5, 0.0]])
    known = logit_stats(z, torch.tensor([0, 0]), 0.5, None, "known")
    assert known["gap_known"] == pytest.approx(1.25)  # (2 + 0.5) / 2, every row
    assert known["gap_hem_margins_known"] == pytest.approx(2.5)
    assert known["kept_hem_known"] == pytest.approx(
        int(kept_mask(z, torch.tensor([0, 0]), 0.5).sum()) / z.numel()
    )
    assert known["settled_hem_known"] == 1.0 and "gap_own_margins_known" not in known
    # the unknowns have no class of the task: the predicted class stands in as the target
    unknown = logit_stats(z[:, [1, 0, 2]], None, 1.0, [1.0, 2.0, 0.5], "unknown")
    assert unknown["gap_unknown"] == pytest.approx(1.25)
    assert unknown["settled_hem_unknown"] == 0.5
    assert unknown["gap_own_margins_unknown"] == pytest.approx((2 / 2 + 0.5 / 2) / 2)


def _tiny_settings(**tuned) -> dict:
    s = task_settings(load_profile("smoke"), "openset")
    s["datasets"] = ["digits"]
    s["train"] = {**s["train"], "epochs": 1}
    s["selection"] = {"mode": "tuned", "file": "test"}
    s["tuned"] = {"openset": {f"digits/{k}": {"chosen": v, "metric": "acc"}
                              for k, v in tuned.items()}}  # fmt: skip
    return s


def test_every_loss_records_the_stats_and_the_sweep_takes_hems_lr():
    """Tuned mode: HEM at x0.25 / x4 trains with the lr chosen for "digits/hem" (the tuned
    file holds no "hem@scale=..." key), CE, MM and LogitNorm record the same statistics."""
    s = _tiny_settings(
        ce={"lr": 0.1}, mm={"lr": 0.1}, hem={"lr": 0.03},
        logitnorm={"lr": 0.1, "temperature": 0.5},
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recs = TASK.run_seed(s, 0, Context())["records"]
    finally:
        torch.set_num_threads(threads)
    assert {(r["group"]["loss"], r["group"].get("margin_scale")) for r in recs} == {
        ("ce", None), ("mm", None), ("hem", None), ("logitnorm", None),
        ("hem", 500.0), ("hem", 8000.0),
    }  # fmt: skip
    hem_margin = {r["extra"]["hem_margin"] for r in recs}
    assert len(hem_margin) == 1  # one unit for every loss: HEM's default margin
    for r in recs:
        m = r["metrics"]
        for part in ("known", "unknown"):
            for stat in STATS:
                assert math.isfinite(m[f"{stat}_{part}"]), (r["group"], stat, part)
            assert 0.0 <= m[f"kept_hem_{part}"] <= 1.0
            assert m[f"gap_hem_margins_{part}"] == pytest.approx(
                m[f"gap_{part}"] / r["extra"]["hem_margin"]
            )
            has_margin = r["group"]["loss"] in ("mm", "hem")
            assert (f"gap_own_margins_{part}" in m) == has_margin
        if r["group"].get("margin_scale"):
            sel = r["extra"]["selection"]
            assert r["extra"]["lr"] == 0.03 and sel["fixed_from"] == "digits/hem"
            assert sel["grid"] == [] and sel["lr_selected_on"] == "as digits/hem (test)"
            scale = r["group"]["margin_scale"] / 2000.0  # own margin: sqrt(scale) x HEM's
            assert m["gap_own_margins_known"] == pytest.approx(
                m["gap_hem_margins_known"] / math.sqrt(scale), rel=1e-3
            )


def test_the_sweep_needs_hem_among_the_losses():
    s = _tiny_settings()
    s["losses"] = ["ce"]
    with pytest.raises(ValueError, match="margin_scales"):
        TASK.planned(s)
