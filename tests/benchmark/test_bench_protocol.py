"""The benchmark protocol on tiny inputs: selection never sees the test split, an unhealthy
run yields no verdict, and verdicts follow the paired 95 % interval over seeds."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from hem_plugins.benchmark import protocol  # noqa: E402
from hem_plugins.benchmark.config import load_profile, task_settings  # noqa: E402
from hem_plugins.benchmark.data import load_dataset, open_set  # noqa: E402
from hem_plugins.benchmark.runner import write_tuned  # noqa: E402
from hem_plugins.benchmark.training import train_selected  # noqa: E402

TINY_TRAIN = {"epochs": 2, "batch_size": 128, "momentum": 0.9, "schedule": "cosine"}
MLP = {"kind": "mlp", "hidden": (16,)}


def _settings(mode: str = "validation", **extra) -> dict:
    return {
        "selection": {"mode": mode, "val_fraction": 0.25, "grid": {"lr": [0.003, 0.3]}},
        "loss_options": {},
        **extra,
    }


# ---- verdicts -----------------------------------------------------------------------------
def test_paired_interval_excludes_zero_only_for_a_consistent_difference():
    # Seeds differ a lot from each other, but HEM beats CE by 1 point in every pair:
    # unpaired stds (about 10 points) would call this noise; the paired rule does not.
    ce = [0.60, 0.70, 0.80, 0.90, 0.75]
    hem = [v + 0.01 for v in ce]
    assert protocol.verdict(hem, ce) == "agrees"
    assert protocol.verdict(ce, hem) == "disagrees"
    mean, lo, hi = protocol.paired_interval(hem, ce)
    assert mean == pytest.approx(0.01) and lo == pytest.approx(0.01) == hi
    # Differences of both signs: the interval holds 0.
    noisy = [0.61, 0.69, 0.81, 0.89, 0.75]
    assert protocol.verdict(noisy, ce) == protocol.NO_DIFFERENCE
    # One pair has no interval at all.
    assert protocol.verdict([0.9], [0.1]) == protocol.NO_DIFFERENCE
    # Lower is better (FPR): the direction flips.
    assert protocol.verdict([0.2, 0.21, 0.19], [0.5, 0.52, 0.49], higher_is_better=False) == (
        "agrees"
    )


def test_tolerance_claims_read_the_interval_against_minus_tolerance():
    ce = [0.90, 0.92, 0.94]
    assert protocol.verdict([0.895, 0.915, 0.935], ce, tolerance=0.02) == "agrees"
    assert protocol.verdict([0.85, 0.87, 0.89], ce, tolerance=0.02) == "disagrees"
    v = protocol.verdict([0.89, 0.87, 0.95], ce, tolerance=0.02)
    assert v == "not decided (the interval spans -2 points)"


def test_paired_verdict_needs_one_value_per_seed_on_both_sides():
    with pytest.raises(ValueError, match="one value per seed"):
        protocol.paired_interval([0.1, 0.2], [0.1])


# ---- health -------------------------------------------------------------------------------
def test_an_unhealthy_run_yields_no_verdict():
    hem = {"acc": [0.99, 0.98, 0.99], "train_acc": [1.0, 0.62, 1.0], "diverged": [0.0, 0.0, 0.0]}
    ce = {"acc": [0.50, 0.51, 0.52], "train_acc": [1.0, 1.0, 1.0], "diverged": [0.0, 0.0, 0.0]}
    v = protocol.claim_verdict(hem, ce, "acc", ("HEM", "CE"), 0.95)
    assert v == "not decided: HEM did not train (train acc 0.62)"
    assert protocol.health_cell(hem, 0.95) == "2/3 ⚠"
    bad_ce = {**ce, "diverged": [0.0, 1.0, 1.0]}
    healthy_hem = {**hem, "train_acc": [1.0, 1.0, 1.0]}
    v = protocol.claim_verdict(healthy_hem, bad_ce, "acc", ("HEM", "CE"), 0.95)
    assert v == "not decided: CE diverged in 2 of 3 runs"
    # Both healthy: the paired rule speaks.
    assert protocol.claim_verdict(healthy_hem, ce, "acc", ("HEM", "CE"), 0.95) == "agrees"
    assert protocol.unhealthy({"train_acc": float("nan")}, 0.9).startswith("did not train")


# ---- selection ----------------------------------------------------------------------------
def test_carve_validation_is_stratified_disjoint_and_keeps_rare_classes():
    y = torch.tensor([0] * 10 + [1] * 5 + [2])
    tr, val = protocol.carve_validation(y, 0.2, seed=3)
    assert set(tr.tolist()).isdisjoint(val.tolist())
    assert sorted(tr.tolist() + val.tolist()) == list(range(len(y)))
    assert torch.bincount(y[val], minlength=3).tolist() == [2, 1, 0]
    assert 15 in tr.tolist()  # the one-sample class stays in training
    same = protocol.carve_validation(y, 0.2, seed=3)
    assert torch.equal(same[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        protocol.carve_validation(y, 1.0, seed=0)


def test_selection_never_sees_the_test_split():
    full = load_dataset("digits", 0)
    split, _ = open_set(full, [0, 1, 2])
    # The same training data with a scrambled test split: selection must not notice.
    g = torch.Generator().manual_seed(0)
    scrambled = replace(
        split,
        x_test=torch.rand(split.x_test.shape, generator=g),
        y_test=torch.randint(0, 3, split.y_test.shape, generator=g),
    )
    runs = []
    for s in (split, scrambled):
        model, hist, part = train_selected(
            _settings(), "openset", "digits/hem", s, "hem", TINY_TRAIN, MLP, 0, 0
        )
        runs.append((hist["selection"], hist["val_score"], model.state_dict()))
        assert hist["selection"]["lr_selected_on"] == "validation"
        assert part.n_train < split.n_train  # the validation carve is held out
    (sel_a, val_a, w_a), (sel_b, val_b, w_b) = runs
    assert sel_a == sel_b and val_a == val_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    scores = [s for _, s in sel_a["grid"]]
    assert len(scores) == 2 and sel_a["chosen"]["lr"] == [0.003, 0.3][scores.index(max(scores))]


def test_tuned_mode_reads_the_file_and_never_scores():
    tuned = {"openset": {"digits/hem": {"chosen": {"lr": 0.1}, "metric": "acc", "grid": []}}}
    settings = {**_settings("tuned"), "tuned": tuned}
    settings["selection"]["file"] = "configs/benchmark/tuned.json"

    def score(params):
        raise AssertionError("tuned mode must not train the grid")

    params, record, run = protocol.select(
        settings, "openset", "digits/hem", {"lr": [1]}, score, "acc"
    )
    assert params == {"lr": 0.1} and run is None
    assert record["lr_selected_on"] == "configs/benchmark/tuned.json"
    with pytest.raises(KeyError, match=r"no entry tuned\['openset'\]\['digits/mm'\]"):
        protocol.select(settings, "openset", "digits/mm", {"lr": [1]}, score, "acc")


def test_tune_writes_the_seed_mean_and_the_quick_profile_reads_it(tmp_path):
    def rec(key, s_lo, s_hi):
        grid = [[{"lr": 0.01}, s_lo], [{"lr": 0.1}, s_hi]]
        best = {"lr": 0.01} if s_lo >= s_hi else {"lr": 0.1}
        sel = {"lr_selected_on": "validation", "metric": "acc", "grid": grid, "chosen": best,
               "key": key}  # fmt: skip
        return {"group": {}, "metrics": {}, "extra": {"selection": sel}}

    # Seed 0 prefers 0.1 narrowly, seed 1 prefers 0.01 clearly: the mean picks 0.01.
    results = {"tasks": {"openset": {"per_seed": {
        "0": {"records": [rec("digits/hem", 0.80, 0.81)]},
        "1": {"records": [rec("digits/hem", 0.90, 0.70)]},
    }}}}  # fmt: skip
    path = write_tuned(results, tmp_path / "tuned.json", "pytest")
    data = json.loads(path.read_text())
    entry = data["tuned"]["openset"]["digits/hem"]
    assert entry["chosen"] == {"lr": 0.01} and entry["seeds"] == [0, 1]
    assert entry["grid"][0][1] == pytest.approx(0.85)
    # A later tune of another task keeps this one.
    results2 = {"tasks": {"imbalanced": {"per_seed": {"0": {"records": [rec("k", 0.1, 0.2)]}}}}}
    data = json.loads(write_tuned(results2, path, "pytest 2").read_text())
    assert set(data["tuned"]) == {"openset", "imbalanced"}
    assert set(data["commands"]) == {"openset", "imbalanced"}


def test_profiles_declare_the_protocol():
    quick = load_profile("quick")
    assert quick["selection"]["mode"] == "tuned"
    assert quick["selection"]["file"] == "configs/benchmark/tuned.json"
    assert len(quick["seeds"]) >= 5
    s = task_settings(quick, "openset")
    for key in ("selection", "min_train_acc", "data_seed", "init_seed", "tuned"):
        assert key in s, key
    # Every classification selection the quick profile needs is in the tuned file.
    for task in ("openset", "adversarial", "imbalanced", "ablation"):
        st = task_settings(quick, task)
        for ds in st["datasets"]:
            for loss in st["losses"]:
                # the task's own entries and, for a setting another task owns, the owner's
                keys = [k for t in (task, *protocol.SELECTION_OWNERS.get(task, ()))
                        for k in st["tuned"][t]]  # fmt: skip
                assert any(k.startswith(f"{ds}/") and k.endswith(f"/{loss}") or
                           k == f"{ds}/{loss}" for k in keys), (task, ds, loss)  # fmt: skip
    tune = load_profile("tune")
    assert tune["selection"]["mode"] == "validation" and tune["write_tuned"].endswith("tuned.json")


def test_run_seeds_separates_data_and_initialisation():
    assert protocol.run_seeds({}, 3) == (3, 3)
    assert protocol.run_seeds({"data_seed": 0}, 3) == (0, 3)
    assert protocol.run_seeds({"init_seed": 7, "data_seed": "run"}, 3) == (3, 7)
    assert math.isnan(protocol.paired_interval([float("nan")], [0.1])[0])


def test_selection_prefers_grid_points_whose_run_trained():
    # lr 0.01 scores best on validation but did not reach the training threshold.
    grid = [[{"lr": 0.01}, 0.95, False], [{"lr": 0.1}, 0.90], [{"lr": 0.3}, float("nan")]]
    assert protocol.best_point(grid) == 1
    assert protocol.best_point([[{"lr": 1}, 0.5, False], [{"lr": 2}, 0.7, False]]) == 1
    assert protocol.best_point([[{"lr": 1}, float("nan")], [{"lr": 2}, 0.1, False]]) == 1

    def score(params):
        return {0.01: 0.95, 0.1: 0.90}[params["lr"]], f"run {params['lr']}", params["lr"] > 0.05

    params, record, run = protocol.select(
        _settings(), "openset", "k", {"lr": [0.01, 0.1]}, score, "acc"
    )
    assert params == {"lr": 0.1} and run == "run 0.1"
    assert record["grid"] == [[{"lr": 0.01}, 0.95, False], [{"lr": 0.1}, 0.9]]


def test_best_point_breaks_ties_towards_the_smaller_lr():
    # 3g's case: CE's mean validation accuracy 0.9784 at lr 0.03 and at lr 0.1.
    grid = [[{"lr": 0.01}, 0.9712], [{"lr": 0.03}, 0.9784], [{"lr": 0.1}, 0.9784],
            [{"lr": 0.3}, 0.9601]]  # fmt: skip
    assert protocol.best_point(grid) == 1
    assert protocol.best_point(grid[::-1]) == 2  # the order of the grid does not matter
    assert protocol.best_and_ties(grid) == (1, [1, 2])
    # equal at the recorded precision (4 decimals) is a tie; a difference there is not
    near = [[{"lr": 0.1}, 0.97841], [{"lr": 0.03}, 0.97838]]
    assert protocol.best_point(near) == 1
    assert protocol.best_point([[{"lr": 0.1}, 0.9785], [{"lr": 0.03}, 0.9784]]) == 0
    # several parameters: the smaller lr first, then the grid's order
    logitnorm = [[{"lr": 0.1, "temperature": 0.04}, 0.9], [{"lr": 0.03, "temperature": 0.5}, 0.9],
                 [{"lr": 0.03, "temperature": 0.1}, 0.9]]  # fmt: skip
    assert protocol.best_point(logitnorm) == 1
    # health and finiteness come before the score; a tie among unhealthy points alike
    assert protocol.best_point([[{"lr": 0.01}, 0.99, False], [{"lr": 0.3}, 0.9],
                                [{"lr": 0.1}, 0.9]]) == 2  # fmt: skip
    assert protocol.best_point([[{"lr": 0.3}, 0.5, False], [{"lr": 0.1}, 0.5, False]]) == 1
    assert protocol.best_point([[{"lr": 0.3}, float("nan")], [{"lr": 0.1}, float("nan")]]) == 1
    # the tuned file's average goes through the same rule
    sel = {"key": "digits/ce", "metric": "acc", "lr_selected_on": "validation",
           "grid": [[{"lr": 0.03}, 0.9784], [{"lr": 0.1}, 0.9784]], "chosen": {"lr": 0.1}}  # fmt: skip
    results = {"tasks": {"openset": {"per_seed": {"100": {"records": [{"extra": {"selection": sel}}]}}}}}  # fmt: skip
    assert protocol.tuned_from_results(results)["openset"]["digits/ce"]["chosen"] == {"lr": 0.03}


def test_lr_sensitivity_best_lr_tie_goes_to_the_smaller_lr_and_says_so():
    from hem_plugins.benchmark.tasks.lr_sensitivity import LRSensitivityTask

    def cell(val):
        return {"val_acc": [val, val], "train_acc": [1.0, 1.0], "diverged": [0.0, 0.0]}

    ce = {0.01: 0.9700, 0.03: 0.9784, 0.1: 0.9784, 0.3: 0.9500}
    hem = {0.01: 0.9790, 0.03: 0.9700, 0.1: 0.9600, 0.3: 0.9000}
    agg = {("digits", "cosine", "ce", lr): cell(v) for lr, v in ce.items()}
    agg |= {("digits", "cosine", "hem", lr): cell(v + 0.0001 * i)
            for i, (lr, v) in enumerate(hem.items())}  # fmt: skip
    line = LRSensitivityTask._best_lr_line(agg, "digits", "cosine", 0.9)
    assert "CE 0.03, HEM 0.01" in line, line
    assert "CE's best lr is a tie (lr 0.03, 0.1 at validation acc 97.84 %)" in line, line
    assert "smaller lr" in line


#: Profiles that report no evaluation: ``tune`` chooses hyper-parameters, ``smoke`` tests the
#: pipeline. Every other profile of configs/benchmark/ is an evaluated one.
NOT_EVALUATED = ("tune", "smoke")


def test_tune_seeds_are_disjoint_from_every_evaluated_profiles_seeds():
    from hem_plugins.benchmark.config import PROFILE_DIR
    from hem_plugins.benchmark.tasks.base import seeds_to_run

    tune = load_profile("tune")
    tune_seeds = set(tune["seeds"])
    evaluated = [
        p.stem for p in sorted(PROFILE_DIR.glob("[!_]*.py")) if p.stem not in NOT_EVALUATED
    ]
    assert {"quick", "full"} <= set(evaluated)
    for name in evaluated:
        overlap = tune_seeds & set(load_profile(name)["seeds"])
        assert not overlap, f"profile {name!r} evaluates tune seed(s) {sorted(overlap)}"
    # the tasks that tune on one seed (max_seeds=1) tune on a tune seed too
    for task, sub in tune["tasks"].items():
        assert set(seeds_to_run({**sub, "seeds": tune["seeds"]})) <= tune_seeds, task
    # the tune seeds give different validation carves (and long-tailed subsamples)
    split = load_dataset("digits", tune["seeds"][0])
    carves = [protocol.carve_validation(split.y_train, 0.2, s)[1] for s in tune["seeds"]]
    assert len(tune_seeds) >= 2 and not torch.equal(carves[0], carves[1])
