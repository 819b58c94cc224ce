"""Validation streams carved from the training experiences, and runs that evaluate them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hem_plugins.benchmark.avalanche import PermutedDigits, SplitDigits
from hem_plugins.benchmark.avalanche.registry import ConfigError
from hem_plugins.benchmark.avalanche.runner import run

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "benchmark.n_experiences": 2,
    "strategy.train_epochs": 1,
    "model.hidden_sizes": [16],
    "loggers": dict(interactive=False, csv=False, tensorboard=False),
}


def _rows(dataset) -> list[tuple]:
    """The (pixels, label, task) of every sample, sorted (a multiset of the data)."""
    return sorted((tuple(x.tolist()), int(y), int(t)) for x, y, t in dataset)


def test_validation_stream_is_a_stratified_carve_of_each_training_experience(digits):
    plain = digits
    bm = SplitDigits(n_experiences=5, seed=0, validation_fraction=0.2)
    assert len(bm.train_stream) == len(bm.valid_stream) == len(bm.test_stream) == 5
    for whole, train, val in zip(plain.train_stream, bm.train_stream, bm.valid_stream,
                                 strict=True):  # fmt: skip
        classes = set(whole.classes_in_this_experience)
        assert (
            set(train.classes_in_this_experience) == set(val.classes_in_this_experience) == classes
        )
        # train part + validation part is the experience's training data, sample for sample
        assert sorted(_rows(train.dataset) + _rows(val.dataset)) == _rows(whole.dataset)
        for c in classes:  # stratified: 20 % of every class
            n_c = sum(1 for _, y, _ in whole.dataset if y == c)
            v_c = sum(1 for _, y, _ in val.dataset if y == c)
            assert v_c == round(0.2 * n_c)
    for a, b in zip(plain.test_stream, bm.test_stream, strict=True):  # the test stream is intact
        assert _rows(a.dataset) == _rows(b.dataset)
    again = SplitDigits(n_experiences=5, seed=0, validation_fraction=0.2)
    assert _rows(again.valid_stream[0].dataset) == _rows(bm.valid_stream[0].dataset)
    other = SplitDigits(n_experiences=5, seed=1, validation_fraction=0.2)
    assert _rows(other.valid_stream[0].dataset) != _rows(bm.valid_stream[0].dataset)


def test_validation_stream_keeps_task_labels_and_domains():
    ti = SplitDigits(n_experiences=5, seed=0, return_task_id=True, validation_fraction=0.2)
    for k, (train, val) in enumerate(zip(ti.train_stream, ti.valid_stream, strict=True)):
        assert train.task_label == val.task_label == k
        assert sorted(val.classes_in_this_experience) == [0, 1]
    di = PermutedDigits(n_experiences=3, seed=0, validation_fraction=0.25)
    for train, val in zip(di.train_stream, di.valid_stream, strict=True):
        assert sorted(val.classes_in_this_experience) == list(range(10))
        assert abs(len(val.dataset) / (len(val.dataset) + len(train.dataset)) - 0.25) < 0.01
    with pytest.raises(ValueError, match="val_fraction must be in"):
        SplitDigits(n_experiences=5, validation_fraction=1.5)


@pytest.mark.slow
def test_run_evaluates_only_the_streams_asked_for(tmp_path):
    config = ROOT / "configs/avalanche/naive_hem_splitdigits.py"
    opts = {**FAST, "benchmark.validation_fraction": 0.2, "eval_streams": ["valid"]}
    summary = run(config, cfg_options=opts, work_dir=tmp_path / "v")
    assert set(summary["streams"]) == {"valid"} and summary["final_accuracy"] is None
    assert len(summary["streams"]["valid"]["accuracy_matrix"]) == 2
    assert 0.0 <= summary["streams"]["valid"]["final_accuracy"] <= 1.0
    assert len(summary["train_accuracies"]) == 2 and 0.0 <= summary["train_accuracy"] <= 1.0
    test = run(config, cfg_options={**opts, "eval_streams": ["test"]}, work_dir=tmp_path / "t")
    assert set(test["streams"]) == {"test"} and test["final_accuracy"] is not None
    # one evaluated stream either way: the same training, sample for sample
    assert test["train_accuracies"] == summary["train_accuracies"]
    both = run(config, cfg_options={**opts, "eval_streams": ["valid", "test"]},
               work_dir=tmp_path / "b")  # fmt: skip
    assert set(both["streams"]) == {"valid", "test"}
    assert both["final_accuracy"] == both["streams"]["test"]["final_accuracy"]
    with pytest.raises(ConfigError, match=r"`eval_streams`: the benchmark has no valid_stream "
                                          r"\(set benchmark.validation_fraction\)"):  # fmt: skip
        run(config, cfg_options={**FAST, "eval_streams": ["valid"]}, work_dir=tmp_path / "x")


@pytest.mark.slow
def test_task_incremental_run_with_a_multi_head_model(tmp_path):
    config = ROOT / "configs/avalanche/replay_hemplus_splitdigits.py"
    opts = {
        **FAST,
        "benchmark.return_task_id": True,
        "model": dict(_delete_=True, type="MultiHeadMLP", input_size=64, hidden_sizes=[16]),
        "strategy.mem_size": 40,
        "strategy.train_epochs": 5,
    }
    summary = run(config, cfg_options=opts, work_dir=tmp_path)
    assert summary["config"]["model"]["type"] == "MultiHeadMLP"
    # two tasks of two classes each: a 2-unit head per task, far above chance (50 %)
    assert summary["final_accuracy"] > 0.6 and summary["train_accuracy"] > 0.6
    assert [m["experience"] for m in summary["margins"]] == [0, 1]
    assert torch.isfinite(torch.tensor(summary["experience_accuracies"])).all()
