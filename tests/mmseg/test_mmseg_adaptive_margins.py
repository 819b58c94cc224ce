"""HEM+'s adaptive margins from an mmseg config (docs/adaptive_margins.md)."""

from __future__ import annotations

import pytest
import torch

from hem_plugins import hem_loss


def build(cfg: dict):
    from mmseg.registry import MODELS

    return MODELS.build(cfg)


def test_margin_rule_from_the_config():
    loss = build(
        dict(type="HEMPlusLoss", class_counts=[900, 100, 50], num_images=10, margin_rule="error")
    )
    base = loss.margin.clone()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    label = torch.randint(0, 3, (2, 4, 4), generator=g)
    label[0, 0] = 255  # the head's ignore_index
    out = loss(logits, label, ignore_index=255)
    factor = loss.margin_rule.factor
    assert not torch.equal(factor, torch.ones(3))
    torch.testing.assert_close(out, hem_loss(logits, label, base * factor, ignore_index=255))
    sched = build(
        dict(type="HEMPlusLoss", class_counts=[900, 100, 50], num_images=10,
             margin_rule=dict(type="scheduled", warmup_steps=10))
    )  # fmt: skip
    torch.testing.assert_close(sched.margins, 0.1 * base)


def test_bad_margin_rule_in_the_config():
    with pytest.raises(ValueError, match="unknown margin_rule type"):
        build(dict(type="HEMPlusLoss", margin_rule="adaptive"))


def test_logit_adjusted_seg_loss_is_the_baseline():
    import hem_plugins.benchmark.mmseg.logit_adjusted  # noqa: F401  (registers the loss)
    from hem_plugins.benchmark.baselines import logit_adjusted_loss

    counts = [900, 100, 50]
    loss = build(dict(type="LogitAdjustedLoss", class_counts=counts, loss_weight=0.4))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    label = torch.randint(0, 3, (2, 4, 4), generator=g)
    label[0, 0] = 255
    expected = 0.4 * logit_adjusted_loss(logits, label, counts, ignore_index=255)
    torch.testing.assert_close(loss(logits, label, ignore_index=255), expected)
    with pytest.raises(RuntimeError, match="LogitAdjustHook"):
        build(dict(type="LogitAdjustedLoss"))(logits, label)
