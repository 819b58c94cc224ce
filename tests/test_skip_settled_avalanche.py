"""SkipSettledPlugin through real Avalanche strategies (Naive, Replay) on a tiny digits benchmark."""

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
from avalanche.training.plugins import ReplayPlugin  # noqa: E402
from avalanche.training.supervised import Naive  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from hem_plugins import HEMLoss  # noqa: E402
from hem_plugins.avalanche.skip_settled import SkipSettledPlugin, with_sample_ids  # noqa: E402

pytestmark = pytest.mark.slow


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
    skip = SkipSettledPlugin(revisit_every=3)
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
    assert skip._present(ids0).all() and not skip._present(ids1).any()
    skip.skip_replayed = True
    assert not skip._present(ids0).any()
    exp1 = [e for e in skip.history if e["experience"] == 1]
    assert len(exp1) == 3 and exp1[0]["loaded"] > len(ids1)  # the replay loader adds memory rows


def test_missing_ids_and_missing_margin_are_named():
    bm = digits_benchmark(ids=False)
    with pytest.raises(ValueError, match="with_sample_ids"):
        make_strategy([SkipSettledPlugin()], epochs=1).train(bm.train_stream[0])
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
