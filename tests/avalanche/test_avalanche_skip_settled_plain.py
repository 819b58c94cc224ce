"""SkipSettledPlugin through real Avalanche strategies (Naive, Replay) on a tiny digits benchmark.

With global ids (``with_sample_ids``) and with none (the plugin numbers the rows itself).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("avalanche")
pytest.importorskip("sklearn")

from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.benchmarks.utils.classification_dataset import (  # noqa: E402
    _make_taskaware_tensor_classification_dataset,
)
from avalanche.core import SupervisedPlugin  # noqa: E402
from avalanche.training.plugins import GDumbPlugin, ReplayPlugin  # noqa: E402
from avalanche.training.supervised import Naive  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from hem_plugins import HEMLoss  # noqa: E402
from hem_plugins.avalanche.skip_settled import SkipSettledPlugin, with_sample_ids  # noqa: E402
from hem_plugins.benchmark.settled_plain import RowCounter  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test of this file on one intra-op thread."""


class BatchSizes(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def before_training_epoch(self, strategy, **kwargs):
        self.epochs.append([])

    def before_forward(self, strategy, **kwargs):
        assert len(strategy.mbatch) == 3  # (x, y, task label): the id column is out
        self.epochs[-1].append(len(strategy.mb_y))


class EvalRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.layouts, self.max_task_label, self.correct, self.total = set(), 0, 0, 0

    def after_eval_forward(self, strategy, **kwargs):
        self.layouts.add(len(strategy.mbatch))
        self.max_task_label = max(self.max_task_label, int(strategy.mb_task_id.max()))
        self.correct += int((strategy.mb_output.argmax(1) == strategy.mb_y).sum())
        self.total += strategy.mb_y.numel()


def digits_benchmark(ids: bool = True, n_train: int = 800):
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    train = _make_taskaware_tensor_classification_dataset(x[:n_train], y[:n_train])
    test = _make_taskaware_tensor_classification_dataset(x[1500:], y[1500:])
    if ids:
        train = with_sample_ids(train)
    return nc_benchmark(
        train, test, n_experiences=2, task_labels=False, seed=0, fixed_class_order=list(range(10))
    )


def make_strategy(plugins, epochs=6, criterion=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Naive(
        model,
        opt,
        criterion or HEMLoss(margin=1.0),
        train_mb_size=32,
        train_epochs=epochs,
        eval_mb_size=256,
        plugins=plugins,
        evaluator=None,
    )


def test_naive_skips_settled_samples_and_keeps_batch_layout():
    bm = digits_benchmark()
    skip = SkipSettledPlugin(revisit_every=3, keep_steps=False, recheck=False)  # the first policy
    sizes = BatchSizes()
    strategy = make_strategy([skip, sizes])
    exp0 = bm.train_stream[0]
    strategy.train(exp0)
    # kept rows are repacked into full batches: only an epoch's last batch may be short
    assert all(all(n == 32 for n in ep[:-1]) for ep in sizes.epochs if ep)
    assert [sum(ep) for ep in sizes.epochs] == [e["presented"] for e in skip.history]
    h = skip.history
    n0 = len(exp0.dataset)
    assert len(h) == 6 and h[0]["presented"] == h[0]["loaded"] == n0
    assert h[-1]["fraction_settled"] > 0.5
    assert min(e["presented"] for e in h[1:]) < 0.5 * n0  # settled samples were skipped
    assert all(e["loaded"] == n0 for e in h)  # the loader itself is untouched
    assert int(skip.tracker.passes.sum()) == sum(e["presented"] for e in h)
    # only ids of experience 0 were trained on
    ids0 = torch.as_tensor(list(exp0.dataset.sample_id))
    assert int(skip.tracker.passes[ids0].sum()) == int(skip.tracker.passes.sum())
    # evaluating a stream that carries ids works: the id column is taken out of mbatch
    seen = EvalRecorder()
    strategy.plugins.append(seen)
    strategy.eval([bm.train_stream[0]])
    assert seen.layouts == {3}  # (x, y, task label)
    assert seen.max_task_label == 0  # task labels, not sample ids, are last
    assert seen.correct / seen.total > 0.5  # trained (skipping costs accuracy here: see the tool)


def test_revisit_every_1_presents_everything():
    bm = digits_benchmark()
    skip = SkipSettledPlugin(revisit_every=1)
    make_strategy([skip], epochs=3).train(bm.train_stream[0])
    assert all(e["presented"] == e["loaded"] for e in skip.history)


def test_replay_buffer_rows_are_tracked_too():
    bm = digits_benchmark()
    skip = SkipSettledPlugin(revisit_every=4)
    replay = ReplayPlugin(mem_size=60)
    strategy = make_strategy([replay, skip], epochs=3)  # order does not matter: wrap per epoch
    strategy.train(bm.train_stream[0])
    passes_after_exp0 = skip.tracker.passes.clone()
    strategy.train(bm.train_stream[1])
    ids0 = torch.as_tensor(list(bm.train_stream[0].dataset.sample_id))
    ids1 = torch.as_tensor(list(bm.train_stream[1].dataset.sample_id))
    replayed = (skip.tracker.passes - passes_after_exp0)[ids0]
    # buffer rows of experience 0 were trained on (and tracked) during experience 1
    assert 0 < int((replayed > 0).sum()) <= 60
    assert bool((skip.tracker.passes[ids1] > 0).all())
    # buffered rows (not of the current experience) are never skipped unless skip_replayed
    skip._plan = torch.zeros(len(skip.tracker), dtype=torch.bool)  # as if all were settled
    assert skip.keep(ids0).all() and not skip.keep(ids1).any()
    skip.skip_replayed = True
    assert not skip.keep(ids0).any()
    exp1 = [e for e in skip.history if e["experience"] == 1]
    assert len(exp1) == 3 and exp1[0]["loaded"] > len(ids1)  # the replay loader adds memory rows


def test_missing_margin_is_named():
    bm = digits_benchmark()
    ce = make_strategy([SkipSettledPlugin()], epochs=1, criterion=torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="HEMLoss / HEMPlusLoss"):
        ce.train(bm.train_stream[0])
    # with an explicit margin any criterion works
    ok = make_strategy(
        [SkipSettledPlugin(margin=1.0)], epochs=1, criterion=torch.nn.CrossEntropyLoss()
    )
    ok.train(bm.train_stream[0])
    with pytest.raises(ValueError, match="already has"):
        with_sample_ids(bm.train_stream[0].dataset)


def _test_accuracy(strategy, bm) -> float:
    seen = EvalRecorder()
    strategy.plugins.append(seen)
    strategy.eval(bm.test_stream)
    strategy.plugins.remove(seen)
    return seen.correct / seen.total


def test_plain_benchmark_needs_no_setup():
    """``plugins=[SkipSettledPlugin()]`` on a benchmark built the usual way (no ids) skips rows,
    keeps mbatch's layout and numbers each experience's rows itself."""
    bm = digits_benchmark(ids=False)
    counter, sizes, skip = RowCounter(), BatchSizes(), SkipSettledPlugin(revisit_every=3)
    strategy = make_strategy([counter, sizes, skip], epochs=4)
    for exp in bm.train_stream:
        strategy.train(exp)
    n = [len(e.dataset) for e in bm.train_stream]
    assert counter.rows < 0.8 * 4 * sum(n)  # settled rows were skipped
    assert len(skip.tracker) == sum(n)  # one tracker entry per row of each experience
    assert (
        int(skip.tracker.passes.sum()) == counter.rows == sum(e["presented"] for e in skip.history)
    )
    assert all(e["unidentified"] == 0 for e in skip.history)
    assert [e["loaded"] for e in skip.history] == [n[0]] * 4 + [n[1]] * 4
    # the experience's own dataset (and thus a replay buffer or an eval stream) is left alone
    assert len(bm.train_stream[0].dataset[0]) == 3
    assert _test_accuracy(strategy, bm) > 0.3  # trained: the last experience's half of the classes


def test_plain_nc_benchmark_with_naive_saves_30_percent_of_passes_at_the_same_accuracy():
    """The measured case of ``tools/skip_settled.py`` for one seed: digits in a plain
    ``nc_benchmark`` (5 experiences), Naive, HEMLoss + ExperienceMarginsPlugin; adding
    ``SkipSettledPlugin()`` (nothing else) trains with >= 30 % fewer sample passes and, as
    its default policy trains as full training does, the same test accuracies; the
    forward-only re-checks are counted. ``benchmarks/skip_settled_plain.json`` holds 10 seeds."""
    from hem_plugins.benchmark.settled_plain import plain_digits, plain_run

    train, test = plain_digits()
    without = plain_run(train, test, seed=0, skip=False, replay=False, epochs=10)
    with_ = plain_run(train, test, seed=0, skip=True, replay=False, epochs=10)
    assert without["passes"] == 10 * len(train)
    assert with_["passes"] <= 0.7 * without["passes"], (with_, without)
    assert abs(with_["acc"] - without["acc"]) <= 0.002, (with_, without)
    assert abs(with_["acc_just_trained"] - without["acc_just_trained"]) <= 0.002
    assert with_["unidentified"] == 0 and without["rechecked"] == 0
    assert with_["rechecked"] >= without["passes"] - with_["passes"]


def test_plain_benchmark_with_replay_presents_and_counts_unidentified_buffer_rows():
    """ReplayPlugin builds its buffer from the untagged experience data: those rows cannot be
    identified, so they are always presented, counted in the history, and not tracked."""
    bm = digits_benchmark(ids=False)
    skip = SkipSettledPlugin(revisit_every=4)
    sizes = BatchSizes()  # also checks that mbatch keeps (x, y, task label)
    strategy = make_strategy([skip, ReplayPlugin(mem_size=60), sizes], epochs=4)
    for exp in bm.train_stream:
        strategy.train(exp)
    n0, n1 = (len(e.dataset) for e in bm.train_stream)
    assert len(skip.tracker) == n0 + n1  # buffer rows got no tracker entry
    exp1 = [e for e in skip.history if e["experience"] == 1]
    for e in exp1:
        # every buffer row the loader gave was trained on, and counted as unidentified
        assert e["unidentified"] == e["loaded"] - n1 > 0
    assert any(e["presented"] < e["loaded"] for e in exp1)  # current rows were skipped
    assert int(skip.tracker.passes.sum()) == sum(
        e["presented"] - e["unidentified"] for e in skip.history
    )
    assert [sum(ep) for ep in sizes.epochs] == [e["presented"] for e in skip.history]


def test_a_plugin_that_replaces_the_tagged_data_is_named():
    """GDumbPlugin listed after SkipSettledPlugin swaps the training data for its buffer: the
    plugin warns and presents (and counts) every row as unidentified."""
    bm = digits_benchmark(ids=False)
    skip = SkipSettledPlugin()
    strategy = make_strategy([skip, GDumbPlugin(mem_size=50)], epochs=2)
    with pytest.warns(UserWarning, match="List SkipSettledPlugin after"):
        strategy.train(bm.train_stream[0])
    assert all(e["presented"] == e["loaded"] == e["unidentified"] == 50 for e in skip.history)


def test_state_dict_restores_the_tracker_and_the_numbering():
    bm = digits_benchmark(ids=False)
    skip = SkipSettledPlugin()
    make_strategy([skip], epochs=2).train(bm.train_stream[0])
    fresh = SkipSettledPlugin()
    fresh.load_state_dict(skip.state_dict())
    assert fresh.epoch == skip.epoch and fresh.history == skip.history
    assert torch.equal(fresh.tracker.passes, skip.tracker.passes)
    n0 = len(bm.train_stream[0].dataset)
    make_strategy([fresh], epochs=1).train(bm.train_stream[1])
    # the next experience's rows are numbered after the restored ones
    assert len(fresh.tracker) == n0 + len(bm.train_stream[1].dataset)
    assert torch.equal(fresh.tracker.passes[:n0], skip.tracker.passes)


def _train_both(plugin, epochs=6):
    """Naive on both experiences of the digits benchmark (no ids), with and without ``plugin``."""
    bm = digits_benchmark(ids=False)
    full_sizes, sizes = BatchSizes(), BatchSizes()
    runs = []
    for plugins in ([full_sizes], [plugin, sizes]):  # one after the other: the same shuffles
        runs.append(make_strategy(plugins, epochs))  # seeds torch
        for exp in bm.train_stream:
            runs[-1].train(exp)
    return runs[0], full_sizes, runs[1], sizes


def test_default_policy_trains_as_full_training_does_with_30_percent_fewer_passes():
    """``SkipSettledPlugin()``: every skipped row re-checked, each batch kept (as many optimiser
    steps as full training) and the skipped rows counted in HEM's threshold, so the weights
    end where full training's end, with >= 30 % fewer forward+backward sample passes."""
    skip = SkipSettledPlugin()
    full, full_sizes, skipping, sizes = _train_both(skip)
    assert [len(ep) for ep in sizes.epochs] == [len(ep) for ep in full_sizes.epochs]
    presented = sum(e["presented"] for e in skip.history)
    loaded = sum(e["loaded"] for e in skip.history)
    assert loaded == sum(map(sum, full_sizes.epochs))
    assert presented <= 0.7 * loaded
    # every row left out was re-checked (forward only) and found settled
    assert sum(e["rechecked"] for e in skip.history) >= loaded - presented > 0
    for p, q in zip(full.model.parameters(), skipping.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_first_policy_is_still_reachable_and_trains_differently():
    skip = SkipSettledPlugin(revisit_every=5, keep_steps=False, recheck=False)
    full, full_sizes, skipping, sizes = _train_both(skip)
    assert sum(len(ep) for ep in sizes.epochs) < sum(len(ep) for ep in full_sizes.epochs)
    assert sum(e["rechecked"] for e in skip.history) == 0
    diff = max(
        float((p - q).detach().abs().max())
        for p, q in zip(full.model.parameters(), skipping.model.parameters(), strict=True)
    )
    assert diff > 1e-3


def test_keep_steps_without_recheck_keeps_the_step_count_only():
    skip = SkipSettledPlugin(recheck=False)
    full, full_sizes, skipping, sizes = _train_both(skip)
    assert [len(ep) for ep in sizes.epochs] == [len(ep) for ep in full_sizes.epochs]
    assert sum(e["rechecked"] for e in skip.history) == 0
    assert sum(e["presented"] for e in skip.history) < sum(map(sum, full_sizes.epochs))
