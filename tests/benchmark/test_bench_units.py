"""Benchmark building blocks: profiles, data splits, repeatable training, task plug points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("torchmetrics")

from hem_plugins.benchmark.config import (  # noqa: E402
    load_config,
    load_profile,
    profile_tasks,
    task_settings,
)
from hem_plugins.benchmark.data import load_dataset, long_tailed, open_set  # noqa: E402
from hem_plugins.benchmark.losses import build_loss  # noqa: E402
from hem_plugins.benchmark.metrics import open_set_metrics  # noqa: E402
from hem_plugins.benchmark.tasks import PAPER_TASKS, TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.base import Context  # noqa: E402
from hem_plugins.benchmark.training import fit, lr_for  # noqa: E402
from hem_plugins.resources import config_path  # noqa: E402

TINY = {"epochs": 2, "batch_size": 128, "lr": {"ce": 0.1, "default": 0.01}}


def test_profiles_inherit_and_override():
    smoke, quick = load_profile("smoke"), load_profile("quick")
    assert smoke["profile"] == "smoke" and smoke["seeds"] == [0]
    assert len(quick["seeds"]) >= 3
    assert smoke["train"]["epochs"] == 2 and smoke["train"]["momentum"] == 0.9  # merged
    assert set(smoke["tasks"]) == set(TASKS) == set(quick["tasks"]) == set(profile_tasks(smoke))
    # quick runs the paper's claims 3a-3g, beyond the rest, with quick's seeds and tuned.json;
    # tune selects for both.
    beyond, tune = load_profile("beyond"), load_profile("tune")
    assert profile_tasks(quick) == list(PAPER_TASKS)
    assert profile_tasks(beyond) == [t for t in TASKS if t not in PAPER_TASKS]
    assert beyond["seeds"] == quick["seeds"] and beyond["profile"] == "beyond"
    assert beyond["selection"] == quick["selection"] and beyond["tuned"] == quick["tuned"]
    # 3g selects nothing; margin_scaling selects its margins inside the task; anomaly_segmentation
    # reads 3e's lr (protocol.SELECTION_OWNERS); settled_rule fixes its lr and rule
    assert set(profile_tasks(tune)) == set(TASKS) - {
        "lr_sensitivity",
        "margin_scaling",
        "anomaly_segmentation",
        "settled_rule",
    }
    for t in profile_tasks(beyond):  # tune selects on beyond's settings of its tasks
        want, got = task_settings(beyond, t), task_settings(tune, t)
        assert got.get("losses") == want.get("losses"), t
    s = task_settings(smoke, "adversarial")
    assert s["eps"] == [0.05] and s["losses"] == ["ce", "hem", "logitnorm"]
    with pytest.raises(FileNotFoundError, match="unknown profile 'nope'"):
        load_profile("nope")
    with pytest.raises(KeyError, match="no settings for task 'x'"):
        task_settings(smoke, "x")


#: Each profile's tasks as they were when the profiles still listed them in `only_tasks`
#: (now the loader's default, hem_plugins.benchmark.tasks.PROFILE_TASKS).
PAPER = ["openset", "adversarial", "imbalanced", "continual", "segmentation", "ablation",
         "lr_sensitivity"]  # fmt: skip
EVERY = [
    *PAPER,
    "adaptive_margins",
    "skip_settled",
    "divisor",
    "margin_scaling",
    "anomaly_segmentation",
    "settled_rule",
]
PROFILE_TASK_LISTS = {
    "quick": PAPER,
    "beyond": [
        "adaptive_margins",
        "skip_settled",
        "divisor",
        "margin_scaling",
        "anomaly_segmentation",
        "settled_rule",
    ],
    "tune": [
        t
        for t in EVERY
        if t not in ("lr_sensitivity", "margin_scaling", "anomaly_segmentation", "settled_rule")
    ],
    "full": EVERY,
    "smoke": EVERY,
}


@pytest.mark.parametrize("name", sorted(PROFILE_TASK_LISTS))
def test_profile_task_lists(name):
    cfg = load_profile(name)
    assert profile_tasks(cfg) == PROFILE_TASK_LISTS[name]
    # results.json's config keeps the list the profile files used to write out
    if name in ("quick", "beyond", "tune"):
        assert cfg["only_tasks"] == PROFILE_TASK_LISTS[name]
    else:
        assert "only_tasks" not in cfg


def test_profile_task_default_is_inherited_and_overridable(tmp_path):
    """A profile file elsewhere inheriting quick runs quick's tasks; its own list wins."""
    quick = config_path("benchmark/quick.py")
    (tmp_path / "a.py").write_text(
        f"_base_ = {str(quick)!r}\nselection = dict(mode='validation')\n"
    )
    (tmp_path / "b.py").write_text("_base_ = 'a.py'\nonly_tasks = ['ablation']\n")
    assert profile_tasks(load_profile(str(tmp_path / "a.py"))) == PAPER
    assert profile_tasks(load_profile(str(tmp_path / "b.py"))) == ["ablation"]


def test_config_base_path(tmp_path):
    (tmp_path / "a.py").write_text("x = dict(p=1, q=2)\ny = 3\n")
    (tmp_path / "b.py").write_text("_base_ = 'a.py'\nx = dict(q=5)\n")
    assert load_config(tmp_path / "b.py") == {"x": {"p": 1, "q": 5}, "y": 3}


def test_lr_for():
    assert lr_for("hem", {"lr": {"ce": 0.1, "default": 0.05}}) == 0.05
    assert lr_for("ce", {"lr": 0.2}) == 0.2
    with pytest.raises(KeyError, match="no entry for loss 'hem'"):
        lr_for("hem", {"lr": {"ce": 0.1}})


def test_open_set_and_long_tail_splits():
    full = load_dataset("digits", 0)
    known, x_unknown = open_set(full, [0, 1, 2, 3, 4, 5])
    assert known.num_classes == 6 and set(known.y_train.tolist()) == set(range(6))
    assert len(known.y_test) + len(x_unknown) == len(full.y_test)
    lt = long_tailed(full, 10, seed=0)
    counts = lt.class_counts()
    assert counts == sorted(counts, reverse=True)
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert len(lt.y_test) == len(full.y_test)  # test set stays balanced
    with pytest.raises(ValueError, match="known classes"):
        open_set(full, [0])


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_1"):
        load_dataset("cifar10", 0, data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="needs --data-root"):
        load_dataset("mnist", 0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", 0)


def test_hem_plus_margins_from_class_counts():
    crit, margins = build_loss("hem_plus", [100, 10])
    assert margins[1] > margins[0]
    _, margin = build_loss("hem", [500, 500])
    assert margin == pytest.approx(2**0.5)  # sqrt(2000 / 1000)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal", [1, 1])


def test_open_set_metrics_perfect_and_random():
    known = torch.tensor([[5.0, 0.0]] * 10)
    unknown = torch.tensor([[0.1, 0.0]] * 10)
    m = open_set_metrics(known, unknown)
    assert m["auroc_msp"] == 1.0 and m["fpr95_msp"] == 0.0 and m["auroc_mls"] == 1.0
    same = open_set_metrics(known, known)
    assert same["auroc_msp"] == 0.5 and same["fpr95_msp"] == 1.0


@pytest.mark.slow
def test_training_repeatable_with_seed():
    split = load_dataset("digits", 0)
    a, ha = fit(split, "hem", 3, TINY, {"hidden": (32,)}, {})
    b, hb = fit(split, "hem", 3, TINY, {"hidden": (32,)}, {})
    c, _ = fit(split, "hem", 4, TINY, {"hidden": (32,)}, {})
    assert ha["train_loss"] == hb["train_loss"]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_fit_trains_on_a_sampler_and_shows_each_batch():
    split = load_dataset("digits", 0)
    half = list(range(0, split.n_train, 2))  # a sampler: iterated once per epoch
    seen: list[torch.Tensor] = []
    train = {**TINY, "schedule": "cosine_epochs"}
    _, hist = fit(split, "hem", 0, train, {"hidden": (16,), "standardize": False}, {},
                  sampler=half, on_batch=lambda idx, out: seen.append(idx))  # fmt: skip
    assert sorted(torch.cat(seen).tolist()) == sorted(half * 2)  # 2 epochs of the sampler's
    assert len(hist["epoch_seconds"]) == len(hist["kept_fraction"]) == 2
    with pytest.raises(ValueError, match="cosine_epochs"):
        fit(split, "ce", 0, {**TINY, "schedule": "step"}, {"hidden": (16,)}, {})


@pytest.mark.slow
def test_task_run_seed_repeatable():
    settings = {
        "datasets": ["digits"],
        "train": TINY,
        "model": {"hidden": (32,)},
        "losses": ["ce", "hem"],
        "known_classes": [0, 1, 2, 3, 4, 5],
    }
    task = TASKS["openset"]
    r1 = task.run_seed(settings, 1, Context())
    r2 = task.run_seed(settings, 1, Context())
    assert r1 == r2
    assert [r["group"]["loss"] for r in r1["records"]] == ["ce", "hem"]
    assert 0.0 <= r1["records"][1]["metrics"]["auroc_msp"] <= 1.0


def test_shipped_configs_are_found_by_repository_path_or_package_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a checkout: only the package's copy can answer
    a = config_path("configs/mmseg/fcn-r18tiny_digitmosaic_hem.py")
    assert a.is_file() and a == config_path("mmseg/fcn-r18tiny_digitmosaic_hem.py")
    (tmp_path / "mine.py").write_text("x = 1\n")  # a user's own file is taken as given
    assert config_path("mine.py") == Path("mine.py")
    with pytest.raises(FileNotFoundError, match="config 'configs/nope.py' not found"):
        config_path("configs/nope.py")


def test_diverging_run_is_reported_not_raised():
    split = load_dataset("digits", 0)
    train = {"epochs": 3, "batch_size": 64, "lr": 1e4, "schedule": "constant"}
    model, hist = fit(split, "hem", 0, train, {"hidden": (16,)}, {})
    assert hist["diverged"] is True
    assert len(hist["train_loss"]) < 3


def test_cli_names_missing_data_and_bad_options(tmp_path, capsys):
    from hem_plugins.benchmark.cli import main

    argv = ["--datasets", "mnist", "--data-root", str(tmp_path), "--tasks", "openset"]
    runs = ["--work-dir", str(tmp_path / "runs")]
    assert main([*argv, "--out", str(tmp_path / "out"), *runs, "--no-progress"]) == 2
    assert "MNIST/raw/train-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert main(["--profile", "smoke", "--tasks", "no_such_task", "--out", str(tmp_path)]) == 2
    assert "unknown task(s) ['no_such_task']" in capsys.readouterr().err
