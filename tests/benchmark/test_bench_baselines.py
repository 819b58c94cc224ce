"""Baselines of hem_plugins.benchmark.baselines against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from hem_plugins import hem_loss, mm_loss
from hem_plugins.benchmark.baselines import (
    HEMNoThresholdLoss,
    LogitAdjustedLoss,
    LogitNormLoss,
    hem_nothreshold_loss,
    logit_adjusted_loss,
    logitnorm_loss,
)


def test_logitnorm_hand_values():
    # ||(3, 4)|| = 5 -> (0.6, 0.8); with tau = 0.5 -> (1.2, 1.6).
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    t = torch.tensor([0, 1])
    got = logitnorm_loss(x, t, temperature=0.5, reduction="none")
    want = [math.log(1 + math.exp(0.4)), math.log(1 + math.exp(2.0))]  # row 2: (0, -2)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(LogitNormLoss(0.5)(x, t), got.mean())


def test_logitnorm_scale_invariant():
    x, t = torch.randn(6, 4), torch.randint(0, 4, (6,))
    torch.testing.assert_close(logitnorm_loss(x, t), logitnorm_loss(7.0 * x, t))


def test_logit_adjusted_hand_values_and_balanced_equals_ce():
    x = torch.tensor([[1.0, 0.0, 0.0]])
    # priors (0.5, 0.25, 0.25): adjusted logits (1 + log .5, log .25, log .25)
    a, b = 1 + math.log(0.5), math.log(0.25)
    want = -(b - math.log(math.exp(a) + 2 * math.exp(b)))
    got = logit_adjusted_loss(x, torch.tensor([1]), [2, 1, 1])
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert LogitAdjustedLoss([2, 1, 1])(x, torch.tensor([1])).item() == pytest.approx(want, 1e-5)
    # tau = 0 or balanced counts: plain cross-entropy
    y, t = torch.randn(5, 3), torch.randint(0, 3, (5,))
    ce = torch.nn.functional.cross_entropy(y, t)
    torch.testing.assert_close(logit_adjusted_loss(y, t, [4, 4, 4]), ce)
    torch.testing.assert_close(logit_adjusted_loss(y, t, [9, 1, 3], tau=0.0), ce)


def test_logit_adjusted_bad_counts():
    x, t = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="class_counts has 2 entries"):
        logit_adjusted_loss(x, t, [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        LogitAdjustedLoss([1, -1, 2])
    with pytest.raises(ValueError, match="target shape"):
        logitnorm_loss(x, torch.tensor([0]))


def test_hem_nothreshold_between_mm_and_hem():
    x = torch.tensor([[2.0, 1.1, 1.5], [0.1, 0.3, 0.2]], requires_grad=True)
    t = torch.tensor([0, 1])
    # errors: row 0 -> 0.1 (i=1), 0.5 (i=2); row 1 -> 0.8 (i=0), 0.9 (i=2); sum 2.3
    assert mm_loss(x, t, 1.0).item() == pytest.approx(2.3 / 6, rel=1e-5)  # all 6 entries
    assert hem_nothreshold_loss(x, t, 1.0).item() == pytest.approx(2.3 / 4, rel=1e-5)
    assert hem_loss(x, t, 1.0).item() == pytest.approx(2.2 / 3, rel=1e-5)  # 0.1 < 2.3/6 dropped
    loss = HEMNoThresholdLoss(1.0)(x, t)
    loss.backward()
    q = 1 / 4
    want = torch.tensor([[-2 * q, q, q], [q, -2 * q, q]])
    torch.testing.assert_close(x.grad, want)


def test_hem_nothreshold_zero_errors_and_checks():
    x = torch.tensor([[10.0, 0.0]], requires_grad=True)
    loss = hem_nothreshold_loss(x, torch.tensor([0]), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))
    with pytest.raises(ValueError):
        hem_nothreshold_loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="margin"):
        hem_nothreshold_loss(torch.zeros(1, 2), torch.tensor([0]), -1.0)
