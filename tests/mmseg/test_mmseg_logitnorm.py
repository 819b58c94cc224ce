"""LogitNormLoss, the mmseg form of LogitNorm (Wei et al., 2022): the anomaly task's rival."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hem_plugins.benchmark.mmseg import LogitNormLoss


def _hand(logits, label, tau, ignore_index=255):
    """Per-pixel CE of logits / (tau * (||logits||_2 over the classes + 1e-7)), by hand."""
    norm = logits.pow(2).sum(1, keepdim=True).sqrt() + 1e-7
    return F.cross_entropy(logits / (tau * norm), label, ignore_index=ignore_index,
                           reduction="none")  # fmt: skip


def test_builds_from_mmseg_registry_with_its_name_and_weight():
    from mmseg.registry import MODELS

    loss = MODELS.build(dict(type="LogitNormLoss", temperature=0.1, loss_weight=0.4))
    assert isinstance(loss, LogitNormLoss) and loss.loss_name == "loss_logitnorm"
    assert (loss.temperature, loss.loss_weight) == (0.1, 0.4)


def test_matches_the_hand_formula_with_ignored_pixels_weight_and_avg_factor():
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 5, 6, 7)).requires_grad_()
    label = torch.randint(0, 5, (2, 6, 7))
    label[0, :2] = 255  # ignored pixels
    valid = label != 255
    ref = _hand(logits, label, 0.04)
    assert (ref[~valid] == 0).all() and ref[valid].sum() > 0
    loss = LogitNormLoss(temperature=0.04, loss_weight=0.5)
    # mean over the labelled pixels (not over all of them, which would be smaller)
    out = loss(logits, label, ignore_index=255)
    torch.testing.assert_close(out, 0.5 * ref.sum() / valid.sum())
    # avg_factor given by the caller: sum / avg_factor
    torch.testing.assert_close(loss(logits, label, avg_factor=10.0), 0.5 * ref.sum() / 10.0)
    # a per-pixel weight, and the other reductions
    w = torch.rand(2, 6, 7)
    torch.testing.assert_close(loss(logits, label, weight=w, reduction_override="sum"),
                               0.5 * (ref * w).sum())  # fmt: skip
    torch.testing.assert_close(loss(logits, label, reduction_override="none"), 0.5 * ref)
    # the norm makes the loss blind to the logits' scale
    torch.testing.assert_close(loss(7 * logits, label), out)
    out.backward()
    assert logits.grad[0, :, :2].abs().sum() == 0  # ignored pixels give no gradient
    assert logits.grad[1].abs().sum() > 0


def test_the_math_is_the_classification_logitnorm():
    from hem_plugins.benchmark.baselines import logitnorm_loss

    logits, label = torch.randn(3, 4, 5, 5), torch.randint(0, 4, (3, 5, 5))
    torch.testing.assert_close(LogitNormLoss(temperature=0.5)(logits, label),
                               logitnorm_loss(logits, label, 0.5))  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(use_sigmoid=True), "use_sigmoid"),
        (dict(reduction="avg"), "reduction"),
        (dict(loss_name="logitnorm"), "loss_"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LogitNormLoss(**kwargs)


def test_bad_inputs_are_named():
    loss = LogitNormLoss()
    logits, label = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ValueError, match="target shape"):
        loss(logits, label[:, :2])
    with pytest.raises(ValueError, match="reduction_override"):
        loss(logits, label, reduction_override="avg")
    with pytest.raises(ValueError, match="weight shape"):
        loss(logits, label, weight=torch.ones(2, 4))
