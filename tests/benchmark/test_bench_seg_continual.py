"""Tasks 3d (continual) and 3e (segmentation): settings, seeds, schedules and their report
sections from hand-made results (the smoke test runs them for real)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from hem_plugins.benchmark.config import load_profile, task_settings  # noqa: E402
from hem_plugins.benchmark.report import headline_table  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.base import Context, seeds_to_run  # noqa: E402
from hem_plugins.benchmark.tasks.seg_runs import schedule_options  # noqa: E402

SEG = TASKS["segmentation"]
QUICK_ITERS = 1200  # the 3e iterations of the quick profile (configs/benchmark/_base.py)


def _seg_result(
    values: dict[str, list[float]], train_acc: dict[str, list[float]] | None = None
) -> dict:
    """mIoU per loss per seed; mAcc = mIoU + 10, aAcc 90, train_acc 0.9 unless given; the lr
    chosen on validation from the grid {0.05, 0.1} (validation mIoU = test mIoU + 1)."""
    n = len(next(iter(values.values())))
    acc = train_acc or {}

    def rec(lo, v, s):
        grid = [[{"lr": 0.05}, v[s] + 1], [{"lr": 0.1}, v[s] - 1]]
        sel = {
            "lr_selected_on": "validation",
            "metric": "val mIoU %",
            "grid": grid,
            "chosen": {"lr": 0.05},
            "key": f"digitmosaic/{lo}",
        }
        return {
            "group": {"dataset": "digitmosaic", "loss": lo},
            "metrics": {
                "mIoU": v[s],
                "mAcc": v[s] + 10,
                "aAcc": 90.0,
                "train_acc": acc.get(lo, [0.9] * n)[s],
                "diverged": 0.0,
            },
            "extra": {"lr": 0.05, "selection": sel, "lr_selected_on": "validation"},
        }

    per_seed = {str(s): {"records": [rec(lo, v, s) for lo, v in values.items()]} for s in range(n)}
    settings = {
        "losses": list(values),
        "iters": 300,
        "config": "configs/mmseg/fcn-r18tiny_digitmosaic_{loss}.py",
        "selection": {"grid": {"lr": [0.05, 0.1]}, "val_fraction": 0.2},
        "min_train_acc": 0.8,
    }  # fmt: skip
    return {"settings": settings, "seeds": list(range(n)), "per_seed": per_seed}


def test_tasks_registered_in_report_order():
    names = list(TASKS)
    assert names.index("imbalanced") < names.index("segmentation") < names.index("ablation")
    if "continual" in TASKS:
        assert names.index("continual") == names.index("segmentation") - 1


SEG_LOSSES = {"ce", "ohem", "focal", "ce_dice", "logit_adjusted", "hem", "hem_plus"}


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_segmentation_configs_exist_for_every_profile(profile):
    s = task_settings(load_profile(profile), "segmentation")
    assert set(s["losses"]) == SEG_LOSSES
    for loss in s["losses"]:
        assert SEG.config_for(s, loss).is_file()
    assert s["iters"] == {"smoke": 4, "quick": QUICK_ITERS, "full": 2400}[profile]


def test_segmentation_rejects_unknown_loss_and_missing_config():
    s = task_settings(load_profile("smoke"), "segmentation")
    with pytest.raises(ValueError, match="unknown loss 'lovasz'"):
        SEG.config_for(s, "lovasz")
    with pytest.raises(FileNotFoundError, match="not found"):
        SEG.config_for({**s, "config": "configs/mmseg/nope_{loss}.py"}, "ce")


def test_max_seeds_runs_the_first_seeds_and_skips_the_rest():
    s = {"seeds": [0, 1, 2], "max_seeds": 2, "losses": ["ce", "hem"],
         "selection": {"grid": {"lr": [0.02, 0.05, 0.1]}}}  # fmt: skip
    assert seeds_to_run(s) == [0, 1]
    assert seeds_to_run({"seeds": [3, 4]}) == [3, 4]
    advanced = []
    out = SEG.run_seed(s, 2, Context(advance=advanced.append))
    assert out == {"records": []}
    assert len(advanced) == 2 * 3  # one per training (loss x lr): the bar still reaches its total


def test_schedule_options_shorten_the_poly_schedule():
    pytest.importorskip("mmseg")
    from hem_plugins.benchmark.mmseg.runner import build_cfg

    cfg = build_cfg(
        "configs/mmseg/fcn-r18tiny_digitmosaic_hem.py", "/tmp/unused", schedule_options(37, 5)
    )
    assert cfg.train_cfg.max_iters == 37 and cfg.train_cfg.val_interval == 37
    assert cfg.param_scheduler[0].end == 37  # else the lr would stop high at a short run
    assert cfg.randomness.seed == 5
    assert cfg.optim_wrapper.optimizer.lr == 0.05
    cfg = build_cfg(
        "configs/mmseg/fcn-r18tiny_digitmosaic_ce.py", "/tmp/unused", schedule_options(9, 0, 0.02)
    )
    assert cfg.optim_wrapper.optimizer.lr == 0.02


def test_segmentation_section_and_headline(tmp_path):
    res = _seg_result({"ce": [10.0, 12.0, 11.0], "dice": [5.0, 5.0, 5.0],
                       "hem": [30.0, 31.0, 30.5], "hem_plus": [11.0, 12.5, 11.0]})  # fmt: skip
    text = SEG.render(res, tmp_path)
    assert "## 3e. Semantic segmentation" in text
    assert "| HEM | 0.05 | 30.50 ± 0.50 | 40.50 ± 0.50 | 90.00 ± 0.00 | 90.0 ± 0.0 | 3/3 |" in text
    assert "- HEM vs CE, mIoU: 30.50 ± 0.50 vs 11.00 ± 1.00, Δ +19.5" in text
    assert "**agrees** (claim: HEM higher)" in text
    assert "- HEM+ vs CE, mIoU: 11.50 ± 0.87 vs 11.00 ± 1.00" in text
    assert "**no difference measured**" in text
    assert "- HEM+ vs HEM, mAcc: 21.50 ± 0.87 vs 40.50 ± 0.50" in text and "**disagrees**" in text
    assert "over 300 iterations" in text and "320 for training and 80 for validation" in text
    assert "| HEM | **31.5 ± 0.5** (3x) | 29.5 ± 0.5 | validation |" in text  # the grid's scores
    assert "<details><summary>Per-seed values</summary>" in text
    assert (tmp_path / "segmentation_digitmosaic.png").stat().st_size > 1000
    assert "](segmentation_digitmosaic.png)" in text
    col = SEG.headline(res, "mnist1d")["3e mIoU % (DigitMosaic)"]
    assert col == {"ce": "11.0 ± 1.0", "dice": "5.0 ± 0.0", "hem": "30.5 ± 0.5",
                   "hem_plus": "11.5 ± 0.9"}  # fmt: skip
    table = headline_table({"headline_dataset": "mnist1d", "tasks": {"segmentation": res}})
    assert "| Dice | 5.0 ± 0.0 |" in table


def test_segmentation_draws_no_verdict_from_a_run_that_did_not_train(tmp_path):
    res = _seg_result({"ce": [10.0, 12.0, 11.0], "ohem": [12.0, 13.0, 12.0],
                       "hem": [30.0, 31.0, 30.5]},
                      train_acc={"ce": [0.9, 0.5, 0.9]})  # fmt: skip
    text = SEG.render(res, tmp_path)
    assert "| CE | 0.05 |" in text and "| 2/3 ⚠ |" in text
    assert "**not decided: CE did not train (train acc 0.50)**" in text
    assert "- HEM vs CE+OHEM, mIoU: " in text and "**agrees**" in text


CL = TASKS["continual"]


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_continual_configs_exist_for_every_profile(profile):
    s = task_settings(load_profile(profile), "continual")
    assert s["strategies"] == ["naive", "replay", "ewc", "lwf"]
    assert s["losses"] == ["ce", "hem", "hem_plus"]
    for st in s["strategies"]:
        for loss in s["losses"]:
            assert CL.config_for(s, st, loss).is_file()
    with pytest.raises(ValueError, match="unknown loss 'mm'"):
        CL.config_for(s, "naive", "mm")
    with pytest.raises(FileNotFoundError, match="'gdumb'"):
        CL.config_for(s, "gdumb", "ce")


def _cl_rec(strategy, loss, acc, forg, diverged=False, train_acc=1.0, scenario="class_incremental"):
    sel = {
        "lr_selected_on": "validation",
        "metric": "m",
        "key": f"{scenario}/{strategy}/{loss}",
        "grid": [[{"lr": 0.02}, acc - 0.01], [{"lr": 0.1}, acc + 0.01]],
        "chosen": {"lr": 0.1},
    }
    extra = {
        "config": f"configs/avalanche/{strategy}_{loss}_splitdigits.py",
        "lr": 0.1,
        "epochs": 10,
        "strategy_cfg": {"type": "Replay", "mem_size": 200},
        "selection": sel,
        "lr_selected_on": "validation",
    }
    group = {"scenario": scenario, "dataset": "splitdigits", "strategy": strategy, "loss": loss}
    if diverged:
        nan = float("nan")
        return {
            "group": group,
            "metrics": {
                "final_acc": nan,
                "forgetting": nan,
                "bwt": nan,
                "train_acc": nan,
                "diverged": 1.0,
            },
            "extra": {"config": extra["config"], "selection": sel},
        }
    return {"group": group,
            "metrics": {"final_acc": acc, "forgetting": forg, "bwt": -forg,
                        "train_acc": train_acc, "diverged": 0.0},
            "extra": extra}  # fmt: skip


def test_continual_section_headline_and_unhealthy_runs(tmp_path):
    per_seed = {
        str(i): {"records": [
            _cl_rec("replay", "ce", 0.60 + d, 0.40 - d), _cl_rec("replay", "hem", 0.80 + d, 0.20 - d),
            _cl_rec("ewc", "ce", 0.2, 0.9), _cl_rec("ewc", "hem", 0.3, 0.8, diverged=i == 0),
            _cl_rec("naive", "ce", 0.2, 0.9), _cl_rec("naive", "hem", 0.3, 0.8, train_acc=0.5),
            _cl_rec("replay", "ce", 0.9, 0.0, scenario="task_incremental"),
            _cl_rec("replay", "hem", 0.9 + d, 0.0, scenario="task_incremental"),
        ]} for i, d in enumerate((0.0, 0.02, 0.01))
    }  # fmt: skip
    settings = {"strategies": ["replay", "ewc", "naive"], "losses": ["ce", "hem"],
                "scenarios": {"class_incremental": {"options": {}},
                              "task_incremental": {"options": {"benchmark.return_task_id": True}}}}  # fmt: skip
    res = {"settings": settings, "seeds": [0, 1, 2], "per_seed": per_seed}
    text = CL.render(res, tmp_path)
    assert (
        "### class-incremental SplitDigits" in text and "### task-incremental SplitDigits" in text
    )
    assert "| Replay | HEM | 81.0 ± 1.0 | 19.0 ± 1.0 | 100.0 ± 0.0 | 3/3 |" in text
    assert "| EWC | HEM | 30.0 ± 0.0 | 80.0 ± 0.0 | 100.0 ± 0.0 | 2/3 ⚠ |" in text
    assert "| Naive | HEM | 30.0 ± 0.0 | 80.0 ± 0.0 | 50.0 ± 0.0 | 0/3 ⚠ |" in text
    assert (
        "- Replay: HEM vs CE, final acc 81.0 ± 1.0 vs 61.0 ± 1.0 (Δ +20.0 [+20.0, +20.0]): **agrees**; "
        in text
    )
    assert "forgetting 19.0 ± 1.0 vs 39.0 ± 1.0: **agrees**" in text
    assert "- EWC: HEM vs CE, final acc" in text and "**not decided: HEM diverged**" in text
    assert "**not decided: HEM did not train (train acc 0.50) in 3 of 3 runs**" in text
    # the grid's validation scores (mean over seeds) and the chosen value
    assert (
        "| class-incremental SplitDigits | Replay | HEM | lr=0.02: 80.0 · lr=0.1: 82.0 | lr=0.1 | validation |"
        in text
    )
    assert "<details><summary>Per-seed values</summary>" in text
    assert (tmp_path / "continual_scenarios.png").stat().st_size > 1000
    assert "](continual_scenarios.png)" in text
    col = CL.headline(res, "mnist1d")["3d final acc % (Replay, SplitDigits)"]
    assert col == {"ce": "61.0 ± 1.0", "hem": "81.0 ± 1.0"}
    res["settings"]["headline_strategy"] = "ewc"
    assert CL.headline(res)["3d final acc % (EWC, SplitDigits)"]["hem"] == "30.0 ± 0.0"
