"""``divisor=`` of HEM ('kept', 'rows', 'floor', ('floor', f)) on every implementation, against
the loop reference of ``tests/helpers/reference.py`` (docs/divisor.md)."""

from __future__ import annotations

import pytest
import torch
from helpers.cases import make_case, runs_on
from helpers.reference import reference_hem

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss, implementations
from hem_plugins.functional import DIVISOR_FLOOR

DIVISORS = ["kept", "rows", "floor", ("floor", 0.02), ("floor", 1.5)]


def check_against_reference(implementation, logits, target, margin, kwargs):
    """Values and gradients (a random probe for 'none') equal the reference's."""
    runs_on(implementation, logits, kwargs.get("p", 1))
    x = logits.clone().requires_grad_(True)
    got = hem_loss(x, target, margin, **kwargs)
    xr = logits.clone().requires_grad_(True)
    want = reference_hem(xr, target, margin, **kwargs)
    exact = logits.dtype == torch.float64
    tol = dict(rtol=1e-10, atol=1e-12) if exact else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.double(), want, **tol)
    probe = torch.randn(got.shape, dtype=torch.float64) if got.dim() else 1.0
    (got * probe).sum().backward()
    if want.requires_grad:
        (want * probe).sum().backward()
        want_grad = xr.grad
    else:
        want_grad = torch.zeros_like(logits)
    gtol = tol if exact else dict(rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), want_grad.double(), **gtol)
    return got


@pytest.mark.parametrize("divisor", DIVISORS, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", range(15))
def test_every_divisor_matches_reference(implementation, seed, reduction, divisor):
    """Random cases: 2-150 classes, (N, C) and spatial inputs, ignore_index, row and class
    weights, HEM and HEM+ margins, p = 1 and 2."""
    logits, target, margin, kwargs, _ = make_case(seed)
    kwargs.update(reduction=reduction, divisor=divisor)
    check_against_reference(implementation, logits, target, margin, kwargs)


@pytest.mark.parametrize("divisor", DIVISORS, ids=str)
@pytest.mark.parametrize("seed", range(6))
def test_masked_units_and_float32(implementation, seed, divisor):
    """mask_value (the CPU kernel then counts |V| from the targets) and float32 logits."""
    logits, target, margin, kwargs, _ = make_case(seed + 40, dtype=torch.float32)
    logits[:, -1:] = -1000.0
    kwargs.update(divisor=divisor, mask_value=-1000.0, p=1)
    if "weight" in kwargs:
        kwargs["weight"] = kwargs["weight"].float()
    if "class_weight" in kwargs:
        kwargs["class_weight"] = kwargs["class_weight"].float()
    check_against_reference(implementation, logits, target, margin, kwargs)


def test_definitions_on_a_hand_case():
    # errors (margin 1): row 0: [0, 0, 0.5]; row 1: [0.8, 0, 0.9]; mean 2.2 / 6 = 0.367
    # K = {0.5, 0.8, 0.9}, sum 2.2; |K| = 3, |V| = 2 (a third row is ignored).
    x = torch.tensor([[2.0, 0.0, 1.5], [0.1, 0.3, 0.2], [5.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0, 1, -100])
    for divisor, d in [("kept", 3), ("rows", 2), ("floor", max(3, DIVISOR_FLOOR * 2)),
                       (("floor", 0.5), 3), (("floor", 2.0), 4), (["floor", 4.0], 8)]:  # fmt: skip
        for name in ("auto", "reference", "chunked"):
            with implementations.use(name):
                got = hem_loss(x, t, 1.0, divisor=divisor)
            assert got.item() == pytest.approx(2.2 / d), (divisor, name)


@pytest.mark.parametrize("divisor", DIVISORS, ids=str)
def test_avg_factor_takes_precedence(implementation, divisor):
    logits, target, margin, kwargs, _ = make_case(3)
    runs_on(implementation, logits, kwargs["p"])
    kwargs.update(avg_factor=7.5)
    base = hem_loss(logits, target, margin, **kwargs)
    torch.testing.assert_close(hem_loss(logits, target, margin, divisor=divisor, **kwargs), base)


@pytest.mark.parametrize("divisor", DIVISORS, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "implementation", ["auto", "reference", "chunked", "cpu_kernel"], indirect=True
)
@pytest.mark.parametrize("shape", [(0, 3), (0, 4, 5, 2), (2, 4, 0)])
def test_empty_batch_and_all_ignored(implementation, shape, reduction, divisor):
    x = torch.randn(shape, requires_grad=True)
    t = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    loss = hem_loss(x, t, 0.5, reduction=reduction, divisor=divisor)
    if reduction != "none":
        assert loss.item() == 0.0
        ignored = torch.randn(2, 3, 4, requires_grad=True)
        out = hem_loss(ignored, torch.full((2, 4), -100), 0.5, divisor=divisor)
        assert out.item() == 0.0
        out.backward()
        assert not ignored.grad.any()
    loss.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_floor_bounds_the_step_when_few_errors_are_kept():
    """One kept error in a batch of 64 rows: 'kept' puts the whole step on it, 'rows' and
    'floor' scale it by 1 / |V| and 1 / (f |V|)."""
    x = torch.zeros(64, 4, dtype=torch.float64)
    x[:, 0] = 5.0  # every row settled by a wide margin...
    x[0] = torch.tensor([0.0, 0.5, -5.0, -5.0])  # ...but one, with one error
    t = torch.zeros(64, dtype=torch.long)
    grads = {}
    for divisor in ("kept", "rows", "floor"):
        xg = x.clone().requires_grad_(True)
        hem_loss(xg, t, 1.0, divisor=divisor).backward()
        grads[divisor] = xg.grad[0, 1].item()
    assert grads["kept"] == pytest.approx(1.0)
    assert grads["rows"] == pytest.approx(1 / 64)
    assert grads["floor"] == pytest.approx(1 / (DIVISOR_FLOOR * 64))


@pytest.mark.parametrize(
    "bad, error, words",
    [
        ("mean", ValueError, "divisor must be one of"),
        ("Kept", ValueError, "divisor must be one of"),
        (None, ValueError, "divisor must be one of"),
        (3, ValueError, "divisor must be one of"),
        (("ceil", 0.1), ValueError, "divisor must be one of"),
        (("floor",), ValueError, "divisor must be one of"),
        (("floor", 0.1, 2), ValueError, "divisor must be one of"),
        (("floor", 0.0), ValueError, "finite f > 0"),
        (("floor", -0.1), ValueError, "finite f > 0"),
        (("floor", float("nan")), ValueError, "finite f > 0"),
        (("floor", float("inf")), ValueError, "finite f > 0"),
        (("floor", "0.1"), TypeError, "needs a number f"),
        (("floor", True), TypeError, "needs a number f"),
    ],
)
def test_bad_divisors_are_rejected_with_clear_errors(bad, error, words):
    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(error, match=words):
        hem_loss(x, t, 1.0, divisor=bad)
    with pytest.raises(error, match=words):
        HEMLoss(margin=1.0, divisor=bad)
    with pytest.raises(error, match=words):
        HEMPlusLoss(class_counts=[3, 2, 1], divisor=bad)
    crit = HEMLoss(margin=1.0)
    with pytest.raises(error, match=words):
        crit.divisor = bad
    assert crit.divisor == "kept"  # a rejected value leaves the old one


@pytest.mark.parametrize("divisor", DIVISORS, ids=str)
def test_modules_pass_the_divisor(divisor):
    logits, target, _, _, _ = make_case(7)
    crit = HEMLoss(margin=0.7, divisor=divisor, mask_value=None)
    assert crit.divisor == divisor
    torch.testing.assert_close(crit(logits, target), hem_loss(logits, target, 0.7, divisor=divisor))
    counts = torch.arange(1, logits.shape[1] + 1).tolist()
    plus = HEMPlusLoss(class_counts=counts, divisor=divisor, mask_value=None)
    want = hem_loss(logits, target, plus.margins, divisor=divisor)
    torch.testing.assert_close(plus(logits, target), want)
    # the default is the paper's |K|, and the attribute can be changed after construction
    default = HEMLoss(margin=0.7, mask_value=None)
    assert default.divisor == "kept"
    default.divisor = divisor
    torch.testing.assert_close(default(logits, target), crit(logits, target))
    assert ("divisor" in repr(crit)) == (divisor != "kept")
