"""SettledMarginPenalty: off is plain HEM bit for bit, on touches settled rows only, bad input."""

from __future__ import annotations

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, mm_loss, settled_mask
from hem_plugins.settled_rules import SettledMarginPenalty
from hem_plugins.skipping import SettledTracker


def batch(seed: int = 0, n: int = 16, c: int = 5, boost: float = 4.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen)
    t = torch.randint(0, c, (n,), generator=gen)
    x[: n // 2].scatter_add_(1, t[: n // 2, None], torch.full((n // 2, 1), boost))  # settled
    return x, t


def loss_and_grad(crit, x, t, **kw):
    x = x.clone().requires_grad_(True)
    loss = crit(x, t, **kw)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("base", [HEMLoss(margin=1.0), HEMPlusLoss(class_counts=[5, 9, 3, 7, 2])])
def test_off_is_plain_hem_bit_for_bit(base):
    x, t = batch()
    rule = SettledMarginPenalty(base, weight=0.0)
    (l0, g0), (l1, g1) = loss_and_grad(base, x, t), loss_and_grad(rule, x, t)
    assert torch.equal(l0, l1) and torch.equal(g0, g1)


@pytest.mark.parametrize("base", [HEMLoss(margin=1.0), HEMPlusLoss(class_counts=[5, 9, 3, 7, 2])])
def test_on_changes_only_settled_rows(base):
    x, t = batch(boost=4.0 + float(base.margins.max()))
    settled = settled_mask(x, t, base.margins)
    assert 0 < int(settled.sum()) < len(t)
    rule = SettledMarginPenalty(base, weight=0.5, factor=3.0)
    (l0, g0), (l1, g1) = loss_and_grad(base, x, t), loss_and_grad(rule, x, t)
    # the base gives settled rows no gradient; the rule gives them one, others unchanged
    assert torch.equal(g0[settled], torch.zeros_like(g0[settled]))
    assert g1[settled].abs().sum() > 0
    assert torch.equal(g1[~settled], g0[~settled])
    want = mm_loss(x[settled], t[settled], base.margins * 3.0, reduction="sum") / len(t)
    assert torch.allclose(l1 - l0, 0.5 * want)


def test_nothing_settled_gives_the_base_loss():
    x, t = batch()
    x = x * 0  # all logits equal: no row is settled
    base = HEMLoss(margin=1.0)
    assert torch.equal(SettledMarginPenalty(base, weight=1.0)(x, t), base(x, t))


def test_tracker_records_the_mask_even_when_off():
    x, t = batch()
    tracker = SettledTracker(len(t))
    rule = SettledMarginPenalty(HEMLoss(margin=1.0), weight=0.0, tracker=tracker)
    rule(x, t, indices=torch.arange(len(t)))
    assert torch.equal(tracker.settled, settled_mask(x, t, 1.0))
    assert int(tracker.passes.sum()) == len(t)


def test_forwards_margin_setting():
    rule = SettledMarginPenalty(HEMLoss(), weight=0.1)
    rule.set_num_samples(2000)
    assert float(rule.margins) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(criterion=torch.nn.CrossEntropyLoss()), TypeError, "margins"),
        (dict(weight=-1.0), ValueError, "weight"),
        (dict(weight=float("nan")), ValueError, "weight"),
        (dict(factor=1.0), ValueError, "factor"),
        (dict(tracker=object()), TypeError, "SettledTracker"),
    ],
)
def test_bad_arguments(kwargs, error, words):
    kw = {"criterion": HEMLoss(margin=1.0), **kwargs}
    with pytest.raises(error, match=words):
        SettledMarginPenalty(**kw)


def test_bad_logits_shape():
    rule = SettledMarginPenalty(HEMLoss(margin=1.0), weight=0.1)
    with pytest.raises(ValueError, match=r"\(N, C\) logits"):
        rule(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
