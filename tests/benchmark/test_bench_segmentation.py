"""Task 3e's protocol with the real mmseg Runner: the lr chosen on a validation split carved
from the training images, the kept model evaluated on the test images, health recorded."""

from __future__ import annotations

import pytest

pytest.importorskip("mmseg")

from hem_plugins.benchmark.mmseg.runner import build_cfg  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.base import Context  # noqa: E402
from hem_plugins.benchmark.tasks.seg_runs import (  # noqa: E402
    carve_options,
    loader_test_images,
    loader_training_part,
    lr_grid,
    schedule_options,
)

SEG = TASKS["segmentation"]
CONFIG = "configs/mmseg/fcn-r18tiny_digitmosaic_{loss}.py"


def _settings(**over) -> dict:
    s = {"losses": ["ce", "hem"], "config": CONFIG, "iters": 2, "seeds": [0],
         "selection": {"mode": "validation", "val_fraction": 0.2, "grid": {"lr": [0.02, 0.05]}},
         "min_train_acc": 0.8}  # fmt: skip
    s.update(over)
    return s


def test_carve_options_train_and_validate_on_training_images_and_keep_the_test_images():
    cfg = build_cfg(
        CONFIG.format(loss="ce"), "/tmp/unused", {**schedule_options(3, 0), **carve_options(0.2, 7)}
    )
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert (train.split, train.carve.part, train.carve.seed) == ("train", "train", 7)
    assert (val.split, val.carve.part, val.carve.seed) == ("train", "val", 7)
    test = loader_test_images(cfg)["dataset"]
    assert test["split"] == "val" and test.get("carve") is None
    fit = loader_training_part(cfg)["dataset"]
    assert fit["carve"]["part"] == "train" and fit["pipeline"] == test["pipeline"]


def test_test_loader_refuses_a_carved_or_training_split():
    cfg = build_cfg(
        CONFIG.format(loss="ce"), "/tmp/unused", {"test_dataloader.dataset.split": "train"}
    )
    with pytest.raises(RuntimeError, match="100 'val' images"):
        loader_test_images(cfg)


def test_lr_grid_takes_only_lr_and_names_a_bad_key():
    assert lr_grid(_settings(), "hem") == {"lr": [0.02, 0.05]}
    s = _settings(selection={"grid": {"lr": [0.1]}, "grid_by_loss": {"hem": {"lr": [0.2]}}})
    assert lr_grid(s, "hem") == {"lr": [0.2]} and lr_grid(s, "ce") == {"lr": [0.1]}
    with pytest.raises(ValueError, match=r"\['epochs'\]"):
        lr_grid(_settings(selection={"grid": {"lr": [0.1], "epochs": [5]}}), "ce")
    with pytest.raises(ValueError, match="needs a non-empty 'lr' list"):
        lr_grid(_settings(selection={"grid": {}}), "ce")


@pytest.mark.slow
def test_validation_mode_trains_every_lr_and_keeps_the_best_on_validation(tmp_path):
    advanced = []
    out = SEG.run_seed(_settings(), 0, Context(work_dir=tmp_path, advance=advanced.append))
    assert len(advanced) == SEG.units(_settings()) == 4  # 2 losses x 2 lrs
    assert [r["group"]["loss"] for r in out["records"]] == ["ce", "hem"]
    for rec in out["records"]:
        m, extra = rec["metrics"], rec["extra"]
        assert 0.0 <= m["train_acc"] <= 1.0 and m["diverged"] == 0.0
        assert all(0.0 <= m[k] <= 100.0 for k in ("mIoU", "mAcc", "aAcc"))
        sel = extra["selection"]
        assert extra["lr_selected_on"] == sel["lr_selected_on"] == "validation"
        assert [p["lr"] for p, _ in sel["grid"]] == [0.02, 0.05]
        best = max(sel["grid"], key=lambda ps: ps[1])
        assert sel["chosen"] == best[0] and extra["lr"] == best[0]["lr"]
        assert extra["val_mIoU"] == best[1]  # the kept run is the scored run, not retrained
        assert extra["n_train"] == 320 and extra["data_seed"] == extra["init_seed"] == 0


@pytest.mark.slow
def test_tuned_mode_trains_once_with_the_tuned_lr(tmp_path):
    entry = {"chosen": {"lr": 0.03}, "metric": "val mIoU %", "grid": [[{"lr": 0.03}, 12.0]]}
    s = _settings(losses=["ce"], seeds=[1], selection={"mode": "tuned", "file": "configs/benchmark/tuned.py"},
                  tuned={"segmentation": {"digitmosaic/iters=2/ce": entry}}, data_seed=5)  # fmt: skip
    advanced = []
    (rec,) = SEG.run_seed(s, 1, Context(work_dir=tmp_path, advance=advanced.append))["records"]
    assert len(advanced) == SEG.units(s) == 1
    assert rec["extra"]["lr"] == 0.03
    assert rec["extra"]["lr_selected_on"] == "configs/benchmark/tuned.py"
    assert (rec["extra"]["data_seed"], rec["extra"]["init_seed"]) == (5, 1)
    with pytest.raises(KeyError, match=r"tuned\['segmentation'\]\['digitmosaic/iters=2/ce'\]"):
        SEG.run_seed({**s, "tuned": {"segmentation": {}}}, 1, Context(work_dir=tmp_path))


@pytest.mark.slow
def test_runs_leave_no_checkpoint_unless_asked_and_keeping_one_changes_no_metric(tmp_path):
    """A smoke-like 3e run (2 iterations, one lr) writes no ``*.pth``; with
    ``keep_checkpoints`` it keeps one per training, and its record is the same."""
    s = _settings(losses=["hem_plus"], selection={"mode": "validation", "val_fraction": 0.2,
                                                   "grid": {"lr": [0.05]}})  # fmt: skip
    plain = SEG.run_seed(s, 0, Context(work_dir=tmp_path / "plain"))["records"][0]
    assert not list((tmp_path / "plain").rglob("*.pth"))
    kept = SEG.run_seed(s, 0, Context(work_dir=tmp_path / "kept", keep_checkpoints=True))
    assert [p.name for p in (tmp_path / "kept").rglob("*.pth")] == ["iter_2.pth"]
    assert kept["records"][0]["metrics"] == plain["metrics"]
    assert kept["records"][0]["extra"]["selection"] == plain["extra"]["selection"]


def test_schedule_options_drop_the_checkpoint_hook_unless_asked():
    cfg = build_cfg(CONFIG.format(loss="ce"), "/tmp/unused", schedule_options(3, 0))
    assert cfg.default_hooks.checkpoint is None
    cfg = build_cfg(
        CONFIG.format(loss="ce"), "/tmp/unused", schedule_options(3, 0, keep_checkpoint=True)
    )
    assert cfg.default_hooks.checkpoint.interval == 3 and not cfg.default_hooks.checkpoint.save_last
