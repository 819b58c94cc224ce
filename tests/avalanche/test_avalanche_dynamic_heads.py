"""Dynamic heads: masked units of IncrementalClassifier do not change the loss; multi-head works."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from helpers.avalanche import Recorder, quiet_evaluator, sgd, tiny_model

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss
from hem_plugins.avalanche import ExperienceMarginsPlugin
from hem_plugins.benchmark.avalanche import MultiHeadMLP, SplitDigits


@pytest.mark.slow
@pytest.mark.parametrize("criterion_cls", [HEMLoss, HEMPlusLoss])
def test_masked_units_leave_the_loss_unchanged(criterion_cls, digits):
    model = tiny_model()
    criterion = criterion_cls()
    recorder = Recorder()
    strategy = Naive(
        model=model,
        optimizer=sgd(model),
        criterion=criterion,
        train_mb_size=64,
        train_epochs=1,
        plugins=[recorder, ExperienceMarginsPlugin()],
        evaluator=quiet_evaluator(),
    )
    strategy.train(digits.train_stream[0])
    strategy.train(digits.train_stream[1])
    out, y, loss = recorder.outputs[-1]
    active = torch.nonzero(out[0] != -1000.0).flatten()
    masked = torch.nonzero(out[0] == -1000.0).flatten()
    assert len(masked) > 0, "the head has masked units (classes not trained yet)"
    assert bool((out[:, masked] == -1000.0).all())
    # Loss on the active units only, targets re-indexed into them.
    remap = torch.full((out.shape[1],), -1, dtype=torch.long)
    remap[active] = torch.arange(len(active))
    margins = criterion.margins
    margin = margins[active] if margins.dim() == 1 else margins
    expected = hem_loss(out[:, active], remap[y], margin, mask_value=None)
    assert loss == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.slow
def test_multihead_task_incremental():
    bm = SplitDigits(n_experiences=5, return_task_id=True, seed=0)
    torch.manual_seed(0)
    model = MultiHeadMLP(hidden_sizes=[16])
    criterion = HEMPlusLoss()
    strategy = Naive(
        model=model,
        optimizer=sgd(model, lr=0.05),
        criterion=criterion,
        train_mb_size=32,
        train_epochs=2,
        plugins=[ExperienceMarginsPlugin()],
        evaluator=quiet_evaluator(),
    )
    for exp in bm.train_stream[:2]:
        assert exp.task_label == exp.current_experience
        strategy.train(exp)
    assert criterion.margins.shape == (2,)  # one 2-unit head per task, classes from 0
    results = strategy.eval(bm.test_stream[:2])
    accs = [v for k, v in results.items() if k.startswith("Top1_Acc_Stream")]
    assert accs and min(accs) > 0.6  # two-class heads, well above chance after 2 epochs
