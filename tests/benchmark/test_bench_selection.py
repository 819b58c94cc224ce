"""Selection never touches evaluation: one test split per dataset whatever the seed, and no
seed's validation carve or training subsample holds a test sample."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from hem_plugins.benchmark import protocol  # noqa: E402
from hem_plugins.benchmark.data import load_dataset, long_tailed  # noqa: E402
from hem_plugins.benchmark.digits import TEST_SPLIT_SEED, load_digits_split  # noqa: E402
from hem_plugins.benchmark.training import validation_carve  # noqa: E402

SEEDS = (0, 1, 2, 100, 101)  # evaluated and tune seeds


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


@pytest.mark.parametrize("dataset, options", [("digits", {}), ("mnist1d", {"num_samples": 500})])
def test_one_test_split_per_dataset_and_no_carve_holds_a_test_sample(dataset, options):
    if dataset == "mnist1d":
        pytest.importorskip("mnist1d")
    first = load_dataset(dataset, SEEDS[0], options)
    test = _rows(first.x_test)
    assert len(test) == len(first.y_test)  # no duplicate rows: row identity is sample identity
    for seed in SEEDS:
        split = load_dataset(dataset, seed, options)
        assert torch.equal(split.x_test, first.x_test) and torch.equal(split.y_test, first.y_test)
        assert not _rows(split.x_train) & test
        for data in (split, long_tailed(split, 10.0, seed)):
            part, x_val, _ = validation_carve(data, 0.2, seed)
            assert x_val.numel() and not _rows(x_val) & test
            assert not _rows(part.x_train) & test
    # the seed still varies the validation carve
    carves = [protocol.carve_validation(first.y_train, 0.2, s)[1] for s in SEEDS]
    assert len({tuple(c.tolist()) for c in carves}) == len(SEEDS)


def test_digits_split_seed_is_a_fixed_constant():
    x_tr, y_tr, x_te, y_te = load_digits_split(0.3)
    again = load_digits_split(0.3, TEST_SPLIT_SEED)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again, strict=True))
    assert tuple(x_te.shape) == (540, 64)


# ---- one tuned value per setting -------------------------------------------------------------
def _sel(key: str, scores: dict[float, float]) -> dict:
    grid = [[{"lr": lr}, v] for lr, v in scores.items()]
    return {"lr_selected_on": "validation", "metric": "acc", "key": key, "grid": grid,
            "chosen": grid[protocol.best_point(grid)][0]}  # fmt: skip


def _results(selections: dict[str, list[dict]]) -> dict:
    return {"tasks": {task: {"per_seed": {"100": {"records": [{"extra": {"selection": s}}
                                                              for s in sels]}}}
                      for task, sels in selections.items()}}  # fmt: skip


SHARED_RESULTS = {
    "imbalanced": [_sel("mnist1d/ratio=100/hem_plus", {0.01: 0.9, 0.03: 0.8})],
    "adaptive_margins": [_sel("mnist1d/ratio=100/hem_plus", {0.01: 0.8, 0.03: 0.9}),
                         _sel("mnist1d/ratio=100/hem_plus_error", {0.01: 0.8, 0.03: 0.9}),
                         _sel("digitmosaic/iters=500/hem_plus", {0.05: 30.0, 0.1: 31.0})],
    "openset": [_sel("digits/hem", {0.01: 0.9, 0.03: 0.95})],
    "ablation": [_sel("digits/hem", {0.01: 0.95, 0.03: 0.9}), _sel("digits/hem_nothr", {0.01: 0.9})],
    "segmentation": [_sel("digitmosaic/iters=300/hem_plus", {0.05: 30.0, 0.1: 29.0})],
    "divisor": [_sel("openset/digits/hem", {0.01: 0.95, 0.03: 0.9}),
                _sel("openset/digits/hem_rows", {0.01: 0.95}),
                _sel("imbalanced/mnist1d/ratio=100/hem", {0.01: 0.95})],
}  # fmt: skip


def test_tuned_from_results_keeps_one_value_per_setting():
    tuned = protocol.tuned_from_results(_results(SHARED_RESULTS))
    assert tuned["imbalanced"] == {
        "mnist1d/ratio=100/hem_plus": tuned["imbalanced"]["mnist1d/ratio=100/hem_plus"]
    }
    assert set(tuned["adaptive_margins"]) == {"mnist1d/ratio=100/hem_plus_error",
                                              "digitmosaic/iters=500/hem_plus"}  # other iters: its own  # fmt: skip
    assert set(tuned["ablation"]) == {"digits/hem_nothr"}
    # the divisor's HEM (kept) on 3a is 3a's setting; on 3c 3c did not select it here: its own
    assert set(tuned["divisor"]) == {"openset/digits/hem_rows", "imbalanced/mnist1d/ratio=100/hem"}
    assert protocol.check_tuned(tuned, evaluated_seeds=[0, 1, 2, 3, 4]) == []
    # and the rerunning tasks read the owners' entries
    for task, key, owner in (("adaptive_margins", "mnist1d/ratio=100/hem_plus", "imbalanced"),
                             ("ablation", "digits/hem", "openset"),
                             ("divisor", "openset/digits/hem", "openset")):  # fmt: skip
        inner = key.split("/", 1)[1] if task == "divisor" else key
        assert protocol.tuned_entry(tuned, task, key) is tuned[owner][inner]


def test_check_tuned_names_a_setting_held_twice_and_evaluated_seeds():
    tuned = {"imbalanced": {"d/ratio=100/hem_plus": {"chosen": {"lr": 0.01}, "seeds": [100]}},
             "adaptive_margins": {"d/ratio=100/hem_plus": {"chosen": {"lr": 0.03}, "seeds": [0]}}}  # fmt: skip
    problems = protocol.check_tuned(tuned, evaluated_seeds=[0, 1])
    assert any("held twice: {'lr': 0.01} vs {'lr': 0.03}" in p for p in problems), problems
    assert any("evaluated seed(s) [0]" in p for p in problems), problems
    assert protocol.check_tuned(protocol.drop_shared(tuned)) == []


def test_write_tuned_keeps_the_owners_value_across_commands(tmp_path):
    from hem_plugins.benchmark.runner import write_tuned

    path = tmp_path / "tuned.json"
    first = _results({"imbalanced": SHARED_RESULTS["imbalanced"]})
    write_tuned(first, path, "tune --tasks imbalanced")
    later = _results({"adaptive_margins": SHARED_RESULTS["adaptive_margins"]})
    later["meta"] = {"task_commands": {"adaptive_margins": "tune --tasks adaptive_margins"}}
    import json

    data = json.loads(write_tuned(later, path, "tune --tasks adaptive_margins").read_text())
    assert "mnist1d/ratio=100/hem_plus" not in data["tuned"]["adaptive_margins"]
    assert data["tuned"]["imbalanced"]["mnist1d/ratio=100/hem_plus"]["chosen"] == {"lr": 0.01}
    assert protocol.check_tuned(data["tuned"]) == []


def test_tasks_that_rerun_a_setting_build_its_key_and_read_its_entry():
    from hem_plugins.benchmark.config import load_profile, task_settings
    from hem_plugins.benchmark.tasks import TASKS
    from hem_plugins.benchmark.tasks.adaptive_margins import seg_settings
    from hem_plugins.benchmark.tasks.divisor import part_settings

    cfg = load_profile("smoke")
    split = load_dataset("digits", 0)
    keys = {}
    for task in ("imbalanced", "adaptive_margins", "openset", "ablation"):
        s = task_settings(cfg, task)
        keys[task] = {r.key for r in TASKS[task].runs(s, "digits", split, 0)}
    assert "digits/ratio=10/hem_plus" in keys["imbalanced"] & keys["adaptive_margins"]
    assert "digits/hem" in keys["openset"] & keys["ablation"]
    # tuned mode: the rerunning tasks read the owner's entry
    entry = {"chosen": {"lr": 0.3}, "metric": "acc", "grid": []}
    mine = {"chosen": {"lr": 0.01}, "metric": "acc", "grid": []}
    cfg["selection"] = {**cfg["selection"], "mode": "tuned", "file": "x.json"}
    cfg["tuned"] = {"imbalanced": {"digits/ratio=10/hem_plus": entry},
                    "openset": {"digits/hem": entry},
                    "segmentation": {"digitmosaic/iters=4/hem_plus": entry},
                    "ablation": {"digits/hem": mine, "digits/mm": mine},
                    "divisor": {"openset/digits/hem": mine}}  # fmt: skip
    for task, key in (("adaptive_margins", "digits/ratio=10/hem_plus"),
                      ("ablation", "digits/hem")):  # fmt: skip
        params, record, _ = protocol.select(task_settings(cfg, task), task, key, {}, None, "acc")
        assert params == {"lr": 0.3} and record["lr_selected_on"] == "x.json", task
    params, _, _ = protocol.select(
        task_settings(cfg, "ablation"), "ablation", "digits/mm", {}, None, "acc"
    )
    assert params == {"lr": 0.01}  # not a setting of 3a's tuned entries here: its own
    sub = part_settings(task_settings(cfg, "divisor"), "openset")
    assert sub["tuned"]["openset"]["digits/hem"] is not mine
    assert sub["tuned"]["openset"]["digits/hem"]["chosen"] == {"lr": 0.3}
    seg = seg_settings(task_settings(cfg, "adaptive_margins"))  # smoke: 4 iterations, as 3e
    seg["selection"]["mode"] = "tuned"  # smoke's segmentation parts select on validation
    params, _, _ = protocol.select(
        seg, "adaptive_margins", "digitmosaic/iters=4/hem_plus", {}, None, "m"
    )
    assert params == {"lr": 0.3}


@pytest.mark.parametrize("name", ["tuned.json"])
def test_committed_tuned_file_holds_one_value_per_setting(name):
    import json

    from hem_plugins.benchmark.config import PROFILE_DIR, load_profile

    data = json.loads((PROFILE_DIR / name).read_text(encoding="utf-8"))
    if "provenance" not in data:
        pytest.skip(f"{name} predates the fixed test split and tune seeds (no 'provenance'): "
                    "regenerate it with the tune profile")  # fmt: skip
    evaluated = {s for p in sorted(PROFILE_DIR.glob("[!_]*.py")) if p.stem not in ("tune", "smoke")
                 for s in load_profile(p.stem)["seeds"]}  # fmt: skip
    assert protocol.check_tuned(data["tuned"], sorted(evaluated)) == []
