"""The C++ kernel's small-call operator (``hem_plugins_kernel::small_loss``, autograd in C++):
it takes the common small call, gives the checked path's loss and gradient bit for bit,
and hands every call that needs a check back to the checked path, which names the problem.
"""

from __future__ import annotations

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss
from hem_plugins.implementations import cpu_kernel, entry
from hem_plugins.implementations.options import LossOptions

pytestmark = pytest.mark.skipif(
    not cpu_kernel.available() or cpu_kernel.small_op() is None,
    reason=f"the kernel's small-call operator did not build: {cpu_kernel.BUILD_ERROR}",
)

SMALL_NODE = "torch::autograd::CppNode<(anonymous namespace)::SmallLoss>"


def _checked(x, t, margin, reduction="mean", mask_value=None):
    """The same call through KernelFunction (the checked path, Python autograd)."""
    opts = LossOptions(reduction=reduction, mask_value=mask_value)
    inputs = entry.value_inputs(x, True, margin, None, None)
    return cpu_kernel.KernelFunction.apply(x, t, margin, opts, inputs)


CASES = {
    "32x10": ((32, 10), torch.float32, 0.7),
    "per_class": ((64, 10), torch.float32, "table"),
    "float64": ((16, 7), torch.float64, 0.3),
    "bfloat16": ((16, 7), torch.bfloat16, 0.3),
    "spatial": ((2, 5, 4, 3), torch.float32, 0.5),
    "int16_targets": ((8, 300), torch.float32, 0.2),
    "not_contiguous": ((10, 6), torch.float32, 0.9),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES)
def test_the_operator_gives_the_checked_path_bit_for_bit(case, reduction):
    shape, dtype, margin = CASES[case]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype)
    if case == "not_contiguous":
        x = torch.randn(shape[::-1], generator=g).t()
    c = shape[1]
    t = torch.randint(0, c, (shape[0], *shape[2:]), generator=g)
    t.view(-1)[::5] = -100  # ignored rows
    if margin == "table":
        margin = torch.linspace(0.1, 2.0, c)
    x1 = x.detach().requires_grad_(True)
    loss = hem_loss(x1, t, margin, reduction=reduction)
    assert loss.grad_fn.name() == SMALL_NODE
    (grad,) = torch.autograd.grad(loss, x1)
    x2 = x.detach().requires_grad_(True)
    want = _checked(x2, t, margin, reduction)
    (want_grad,) = torch.autograd.grad(want, x2)
    assert loss.dtype == want.dtype and grad.dtype == want_grad.dtype
    assert torch.equal(loss, want) and torch.equal(grad, want_grad)


def test_masked_units_and_the_modules_take_the_operator():
    x = torch.randn(12, 6)
    x[:, 4:] = -1000.0  # an IncrementalClassifier's unseen units
    t = torch.randint(0, 4, (12,))
    crit = HEMLoss(margin=0.4)  # mask_value -1000 by default
    x1 = x.clone().requires_grad_(True)
    loss = crit(x1, t)
    assert loss.grad_fn.name() == SMALL_NODE
    x2 = x.clone().requires_grad_(True)
    want = _checked(x2, t, 0.4, mask_value=-1000.0)
    assert torch.equal(loss, want)
    assert torch.equal(torch.autograd.grad(loss, x1)[0], torch.autograd.grad(want, x2)[0])
    plus = HEMPlusLoss(class_counts=[5.0, 1.0, 3.0, 2.0, 4.0, 6.0])
    assert plus(x.clone().requires_grad_(True), t).grad_fn.name() == SMALL_NODE


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x, t: hem_loss(x, t.index_fill(0, torch.tensor([3]), 6), 0.5), ValueError, "target"),
        (lambda x, t: hem_loss(x[:, :0], t, 0.5), ValueError, "C = 0"),
        (lambda x, t: hem_loss(x, t[:3], 0.5), ValueError, "target shape"),
        (lambda x, t: hem_loss(x, t.float(), 0.5), TypeError, "integer class indices"),
        (lambda x, t: hem_loss(x, t, -0.5), ValueError, "non-negative"),
        (lambda x, t: hem_loss(x, t, torch.ones(3)), ValueError, "per-class margin has 3"),
        (lambda x, t: hem_loss(x, t, torch.full((6,), float("nan"))), ValueError, "margin"),
        (lambda x, t: hem_loss(x.index_fill(0, torch.tensor([1]), float("nan")), t, 0.5),
         ValueError, "NaN"),
        (lambda x, t: hem_loss(x, t, 0.5, reduction="average"), ValueError, "reduction"),
    ],
    ids=["target_range", "no_classes", "target_shape", "float_target", "negative_margin",
         "margin_shape", "nan_margin", "nan_logit", "bad_reduction"],
)  # fmt: skip
def test_a_call_that_needs_a_check_gets_the_checked_paths_error(call, error, match):
    x, t = torch.randn(8, 6), torch.randint(0, 6, (8,))
    with pytest.raises(error, match=match):
        call(x, t)


def test_the_operator_hands_back_calls_it_does_not_take():
    x, t = torch.randn(8, 6, requires_grad=True), torch.randint(0, 6, (8,))
    for kwargs in (
        {"reduction": "none"},
        {"weight": torch.ones(8)},
        {"avg_factor": 4.0},
        {"divisor": "rows"},
        {"check_finite": False, "class_weight": [1.0] * 6},
    ):
        loss = hem_loss(x, t, 0.5, **kwargs)
        assert loss.grad_fn.name() != SMALL_NODE, kwargs
    nan_row = x.detach().index_fill(0, torch.tensor([2]), float("nan"))
    assert torch.isnan(hem_loss(nan_row, t, 0.5, check_finite=False))
    ignored = t.clone()
    ignored[2] = -100  # NaN in an ignored row: never used, the loss of the others
    torch.testing.assert_close(
        hem_loss(nan_row, ignored, 0.5),
        hem_loss(x.detach().index_fill(0, torch.tensor([2]), 0.0), ignored, 0.5),
    )


def test_a_gradient_with_create_graph_is_a_constant():
    x, t = torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,))
    (g,) = torch.autograd.grad(hem_loss(x, t, 0.5), x, create_graph=True)
    assert not g.requires_grad
    loss = hem_loss(x, t, 0.5)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        torch.autograd.grad(loss, x, torch.ones((), requires_grad=True), create_graph=True)


def test_logits_the_operator_does_not_take_never_reach_it(monkeypatch):
    """float16 (and, on a GPU, CUDA) logits are sent to the checked path by two attribute
    reads in Python, not by an exception raised in C++ and caught."""
    calls = []
    real = cpu_kernel.small_op()

    def counting(*args):
        calls.append(args[0].dtype)
        return real(*args)

    monkeypatch.setattr(cpu_kernel, "small_op", lambda: counting)
    t = torch.randint(0, 6, (8,))
    half = hem_loss(torch.randn(8, 6).half(), t, 0.5)
    assert half.dtype == torch.float32 and calls == []
    hem_loss(torch.randn(8, 6), t, 0.5)
    assert calls == [torch.float32]
    hem_loss(torch.randn(8, 6, dtype=torch.float64), t, 0.5)
    assert calls == [torch.float32, torch.float64]


@pytest.mark.parametrize(
    "reduction, p, divisor, weight, class_weight, avg_factor, takes",
    [
        ("mean", 1, "kept", None, None, None, True),
        ("sum", 1, "kept", None, None, None, True),
        ("none", 1, "kept", None, None, None, False),
        ("mean", 2, "kept", None, None, None, False),
        ("mean", 1, "rows", None, None, None, False),
        ("mean", 1, "kept", torch.ones(3), None, None, False),
        ("mean", 1, "kept", None, torch.ones(3), None, False),
        ("mean", 1, "kept", None, None, 2.0, False),
    ],
)
def test_one_rule_says_which_options_the_operator_takes(
    reduction, p, divisor, weight, class_weight, avg_factor, takes
):
    assert entry.takes_small_call(reduction, p, divisor, weight, class_weight, avg_factor) is takes
    x, t = torch.randn(3, 3, requires_grad=True), torch.tensor([0, 1, 2])
    kwargs = dict(reduction=reduction, p=p, divisor=divisor, weight=weight)
    loss = hem_loss(x, t, 0.5, class_weight=class_weight, avg_factor=avg_factor, **kwargs)
    assert (loss.grad_fn.name() == SMALL_NODE) is takes
