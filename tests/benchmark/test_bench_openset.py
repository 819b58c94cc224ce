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


def _synthetic(sign: int, fixed: bool = True) -> dict:
    """3a records of CE and HEM over 6 seeds: HEM's known gap rises with the seed and the
    margin scale, its AUROC rises (``sign`` +1) or falls (-1) with both; CE lies at a small
    gap, AUROC about 0.9."""
    per_seed = {}
    for seed in range(6):
        recs = []
        for loss, scale, gap, auc in (
            ("ce", None, 1.0 + 0.01 * seed, 0.9 + 0.001 * ((seed * 7) % 5)),
            ("hem", None, 5.0 + seed, 0.8 + sign * 0.02 * seed),
            ("hem", 500.0, 3.0 + seed, 0.8 + sign * (0.02 * seed - 0.05)),
            ("hem", 8000.0, 9.0 + seed, 0.8 + sign * (0.02 * seed + 0.05)),
        ):
            group = {"dataset": "digits", "loss": loss}
            if scale:
                group["margin_scale"] = scale
            m = {"auroc_msp": auc, "auroc_mls": auc - 0.01, "train_acc": 1.0, "diverged": 0.0,
                 "gap_hem_margins_known": gap, "gap_hem_margins_unknown": gap / 2,
                 "kept_hem_known": 0.001, "kept_hem_unknown": 0.01}  # fmt: skip
            sel = {"fixed_from": "digits/hem"} if scale and fixed else {}
            recs.append({"group": group, "metrics": m, "extra": {"lr": 0.03, "selection": sel}})
        per_seed[str(seed)] = {"records": recs}
    return {"settings": {"loss_options": {"margin_scale": 2000.0}}, "seeds": list(range(6)),
            "per_seed": per_seed}  # fmt: skip


def test_section_branches_on_the_sign_of_the_correlation():
    from hem_plugins.benchmark.tasks.openset import explained_section

    up, down = explained_section(_synthetic(+1)), explained_section(_synthetic(-1))
    # HEM over its seeds: the gap goes with AUROC, up or down
    assert "HEM over its seeds: runs with a larger known gap have a **higher** MSP AUROC" in up
    assert "opposite of what saturation predicts" in up
    assert "HEM over its seeds: runs with a larger known gap have a **lower** MSP AUROC" in down
    assert "the direction saturation predicts" in down
    # the margin sweep at one lr: a larger margin, a higher / lower AUROC
    assert "at the one lr, a larger margin goes with a **higher** MSP AUROC" in up
    assert "at the one lr, a larger margin goes with a **lower** MSP AUROC" in down
    # pooled over CE and HEM (CE: small gap, high AUROC) the verdict follows the numbers
    # (and within HEM in one case; in the other HEM's own runs go the other way: mixed)
    assert "as the explanation of a lower AUROC is **supported**" in down
    assert "and so it does within HEM" in down
    assert "as the explanation of a lower AUROC is **mixed**" in up
    assert "but within HEM a larger gap goes with a higher one" in up
    # HEM's max-logit AUROC is below CE's in both: the sentence that rules out the softmax
    assert "softmax saturation cannot account for that difference" in down
    # no number typed in the section's prose: every rho comes from scipy on these records
    from scipy.stats import spearmanr

    hem = [r for p in _synthetic(-1)["per_seed"].values() for r in p["records"]
           if r["group"]["loss"] == "hem" and "margin_scale" not in r["group"]]  # fmt: skip
    rho = spearmanr([r["metrics"]["gap_hem_margins_known"] for r in hem],
                    [r["metrics"]["auroc_msp"] for r in hem]).statistic  # fmt: skip
    assert f"ρ = {rho:+.2f}" in down


def test_section_without_a_relation_and_with_old_records():
    from hem_plugins.benchmark.tasks.openset import explained_section, relation_sentence

    flat = relation_sentence("HEM", "known gap", 0.1, 0.8, 5)
    assert "no monotone relation" in flat and "neither support nor refute" in flat
    assert "no rank correlation" in relation_sentence("HEM", "gap", float("nan"), float("nan"), 2)
    # sweep runs that chose their own lr are named as such
    text = explained_section(_synthetic(-1, fixed=False))
    assert "chose their own lr" in text and "with each scale its own lr" in text
    # records from before the statistics: the section says so, and renders
    old = _synthetic(+1)
    for p in old["per_seed"].values():
        for r in p["records"]:
            r["metrics"] = {
                k: v for k, v in r["metrics"].items() if not k.startswith(("gap", "kept"))
            }
    assert "predate" in explained_section(old)


def test_saturation_verdict_branches():
    from hem_plugins.benchmark.tasks.openset import saturation_verdict

    nan = (float("nan"), float("nan"))
    assert saturation_verdict((0.6, 0.01), {"HEM": nan}).startswith("**contradicted**")
    assert saturation_verdict((-0.6, 0.01), {"HEM": (0.9, 0.01)}).startswith("**mixed**")
    assert saturation_verdict((-0.6, 0.01), {"HEM": (-0.9, 0.01)}).startswith("**supported**")
    assert "no relation is measured" in saturation_verdict((-0.6, 0.01), {"HEM": (-0.3, 0.4)})
    assert saturation_verdict((-0.2, 0.3), {"HEM": nan}).startswith("**not supported**")
