"""HEM+ with an adaptive margin rule as an Avalanche criterion (docs/adaptive_margins.md)."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from helpers.avalanche import quiet_evaluator, sgd, tiny_model

from hem_plugins import HEMPlusLoss, class_margins
from hem_plugins.avalanche import ExperienceMarginsPlugin
from hem_plugins.benchmark.avalanche.registry import CRITERIA, build


@pytest.mark.slow
def test_error_rule_under_the_plugin(digits):
    criterion = build(CRITERIA, dict(type="HEMPlusLoss", margin_rule="error"), "criterion")
    assert isinstance(criterion, HEMPlusLoss)
    model = tiny_model()
    strategy = Naive(model=model, optimizer=sgd(model), criterion=criterion, train_mb_size=128,
                     train_epochs=1, plugins=[ExperienceMarginsPlugin()], evaluator=quiet_evaluator())  # fmt: skip
    exp = digits.train_stream[0]
    strategy.train(exp)
    rule = criterion.margin_rule
    assert int(rule.updates) > 0
    y = torch.tensor([int(v) for v in exp.dataset.targets])
    counts = torch.bincount(y, minlength=criterion.margin.numel()).double()
    present = counts > 0
    # the plugin's class-count margins, times the rule's factors (within its bounds)
    torch.testing.assert_close(criterion.margin[present], class_margins(counts)[present])
    torch.testing.assert_close(criterion.margins, criterion.margin * rule.factor)
    assert bool(((rule.factor >= 0.5) & (rule.factor <= 2.0)).all())
