"""Every bad input gets an error that names the problem."""

from __future__ import annotations

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, class_margins, hem_loss, margin_for_dataset, mm_loss

X = torch.randn(4, 3)
T = torch.tensor([0, 1, 2, 1])
NAN, INF = float("nan"), float("inf")
EPS = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("fn", [hem_loss, mm_loss])
@pytest.mark.parametrize(
    "logits, target, kwargs, message",
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2]), {}, "does not match logits shape"),
        (
            torch.randn(2, 3, 4, 4),
            torch.zeros(2, 4, 5, dtype=torch.long),
            {},
            "expected target of shape",
        ),
        (torch.randn(4), torch.tensor([0, 1, 2, 1]), {}, "logits must have shape"),
        (X, T.float(), {}, "integer class indices"),
        (X, torch.tensor([0, 1, 3, 1]), {}, r"outside \[0, 3\)"),
        (X, torch.tensor([0, -1, 2, 1]), {}, r"\[-1\] outside"),
        (X, T, {"margin": torch.ones(4)}, "4 entries but logits have C=3"),
        (X, T, {"margin": -0.5}, "non-negative"),
        (X, T, {"margin": float("nan")}, "finite"),
        (X, T, {"margin": torch.tensor([0.1, float("inf"), 0.1])}, "finite"),
        (X, T, {"margin": torch.tensor([0.1, -1.0, 0.1])}, "non-negative"),
        (X, T, {"margin": torch.ones(3, 1)}, "1-D tensor of C margins"),
        (X, T, {"reduction": "avg"}, "reduction must be one of"),
        (X, T, {"p": 3}, "p must be 1 or 2"),
        (torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([0]), {}, "1 NaN"),
        (torch.tensor([[0.0, float("inf"), 1.0]]), torch.tensor([0]), {}, r"1 \+inf"),
        (torch.tensor([[float("-inf"), 0.0]]), torch.tensor([0]), {}, "target logit of -inf"),
        (X, T, {"weight": torch.ones(3)}, "weight shape"),
        (X, T, {"weight": -torch.ones(4)}, "weight must be non-negative"),
        (X, T, {"class_weight": torch.ones(2)}, "class_weight must have C=3"),
        (X, T, {"class_weight": [1.0, 2.0]}, "class_weight must have C=3"),
        (X, T, {"class_weight": [[1.0, 2.0, 3.0]]}, r"got shape \(1, 3\)"),
        (X, T, {"class_weight": ["a", "b", "c"]}, "list or tuple of C numbers"),
        (X, T, {"class_weight": {0: 1.0}}, "list or tuple of C numbers"),
        (X, T, {"reduction": "sum", "avg_factor": 3.0}, "avg_factor can only be used"),
        (X, T, {"avg_factor": NAN}, "avg_factor must be a finite number >= 0"),
        (X, T, {"avg_factor": INF}, "avg_factor must be a finite number >= 0"),
        (X, T, {"avg_factor": -1}, "avg_factor must be a finite number >= 0"),
        (X, T, {"avg_factor": "4"}, "avg_factor must be a number"),
        (X, T, {"avg_factor": True}, "avg_factor must be a number"),
        (X, T, {"avg_factor": torch.ones(2)}, r"one-element tensor, got a tensor of shape \(2,\)"),
        (X, T, {"avg_factor": torch.tensor(NAN)}, "avg_factor must be finite"),
        (X, T, {"avg_factor": torch.tensor(-2.0)}, "avg_factor must be non-negative"),
        (torch.randn(3, 0), torch.full((3,), -100), {}, "C = 0 classes"),
        (torch.randn(0, 0), torch.zeros(0, dtype=torch.long), {}, "C = 0 classes"),
        (torch.randn(2, 0, 4), torch.zeros(2, 4, dtype=torch.long), {}, "C = 0 classes"),
        (
            torch.tensor([[2e38, -2e38, 0.0], [1.0, 1.0, 0.0]]),
            torch.tensor([1, 1]),
            {},
            "the errors overflow float32: logits too large",
        ),
    ],
)
def test_functional_errors(fn, logits, target, kwargs, message):
    kwargs = dict(kwargs)
    margin = kwargs.pop("margin", 1.0)
    with pytest.raises((ValueError, TypeError), match=message):
        fn(logits, target, margin, **kwargs)


def test_ignored_targets_may_be_any_value():
    t = torch.tensor([0, 255, 2, 255])
    assert torch.isfinite(hem_loss(X, t, 1.0, ignore_index=255))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: margin_for_dataset(0), "positive number"),
        (lambda: margin_for_dataset(100, scale=-1), "scale must be"),
        (lambda: class_margins([1, -2, 3]), r"negative at classes \[1\]"),
        (lambda: class_margins([0, 0]), "all zero"),
        (lambda: class_margins([[1, 2]]), "1-D"),
        (lambda: HEMPlusLoss(class_counts=[[1, 2], [3, 4]]), r"1-D sequence, got shape \(2, 2\)"),
        (lambda: HEMPlusLoss().set_class_counts([[1, 2, 3]]), r"1-D sequence, got shape \(1, 3\)"),
        (lambda: HEMPlusLoss(class_counts=5), r"1-D sequence, got shape \(\)"),
        (lambda: HEMLoss(margin=0.5)(torch.randn(3, 0), torch.zeros(3).long()), "C = 0"),
        (lambda: HEMPlusLoss()(torch.randn(3, 0), torch.zeros(3).long()), "C = 0"),
        (
            lambda: HEMLoss(margin=0.5)(X, T, avg_factor=torch.tensor(NAN)),
            "avg_factor must be finite",
        ),
        (lambda: HEMLoss(margin=0.5)(X, T, avg_factor=-3.0), "avg_factor must be a finite"),
        (lambda: class_margins([1, float("nan")]), "finite"),
        (lambda: HEMLoss(margin=-1.0), "non-negative"),
        (lambda: HEMLoss(reduction="avg"), "reduction"),
        (lambda: HEMLoss(p=0), "p must be"),
        (lambda: HEMPlusLoss(class_counts=[3, -1]), "non-negative"),
        (
            lambda: HEMPlusLoss(class_counts=[1, 2, 3])(X[:, :2], T.clamp(max=1)),
            "counts for 3 classes",
        ),
    ],
)
def test_margin_and_module_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cpu_checks_tensor_margins_and_weights_even_without_check_finite():
    # check_finite=False skips the logit checks; on the CPU the value checks of tensor
    # margins and weights cost no synchronisation and stay (on CUDA they are skipped).
    with pytest.raises(ValueError, match="non-negative"):
        hem_loss(X, T, torch.tensor([0.1, -1.0, 0.1]), check_finite=False)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        hem_loss(X, T, 1.0, weight=-torch.ones(4), check_finite=False)


# The edges of every implementation (``docs/design.md`` section 3, rules 9, 12, 13): the same
# answer, or the same error, on each.


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
@pytest.mark.parametrize("fn", [hem_loss, mm_loss])
def test_zero_classes_raise_before_any_implementation_runs(implementation, fn):
    # The C++ kernel used to read past the logits here (a segmentation fault).
    for shape in [(3, 0), (3, 0, 2, 2), (0, 0)]:
        x = torch.randn(shape)
        t = torch.full((shape[0], *shape[2:]), -100)
        with pytest.raises(ValueError, match=r"logits have C = 0 classes \(shape"):
            fn(x, t, 1.0)


def _with_ignored_rows(value, spatial):
    """Logits whose rows 1 (target ignore_index) and 3 (weight 0) hold ``value``, the target,
    the weights, and the same logits with those rows set to 0."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, *spatial, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 4, (5, *spatial), generator=gen)
    t[1] = -100
    w = torch.ones(t.shape, dtype=torch.float64)
    w[3] = 0
    clean = x.clone()
    clean[1] = clean[3] = 0
    x[1, 2] = value
    x[3, 0] = value
    x[3, int(t[3].reshape(-1)[0])] = value  # its target logit too
    return x, t, w, clean


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("spatial", [(), (3,)])
@pytest.mark.parametrize("check_finite", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_rows_that_take_no_part_may_hold_any_value(
    implementation, value, spatial, check_finite, reduction
):
    # NaN or +inf in an ignored row raised on the torch implementations, not in the kernel;
    # the rule (as cross-entropy's ignore_index): such rows are never used.
    x, t, w, clean = _with_ignored_rows(value, spatial)
    kwargs = dict(weight=w, check_finite=check_finite, reduction=reduction)
    for fn, margin in [(hem_loss, torch.tensor([0.5, 1.0, 0.2, 0.7])), (mm_loss, 1.0)]:
        got_x = x.clone().requires_grad_(True)
        got = fn(got_x, t, margin, **kwargs)
        want_x = clean.clone().requires_grad_(True)
        want = fn(want_x, t, margin, **kwargs)
        torch.testing.assert_close(got, want)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(got_x.grad, want_x.grad)
        assert not got_x.grad[1].any() and not got_x.grad[3].any()


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
@pytest.mark.parametrize(
    "row, target, message",
    [
        ([0.0, NAN, 1.0], 0, "1 NaN and 0 \\+inf values in rows that take part"),
        ([0.0, INF, 1.0], 0, "0 NaN and 1 \\+inf values"),
        ([INF, 0.0, 1.0], 0, "0 NaN and 1 \\+inf values"),  # a +inf target logit
        ([-INF, 0.0, 1.0], 0, "a valid row has a target logit of -inf"),
        ([2e38, -2e38, 0.0], 1, "the errors overflow float32: logits too large"),
    ],
)
def test_non_finite_errors_of_valid_rows(implementation, row, target, message):
    x = torch.tensor([[0.5, 0.0, 1.0], row, [NAN, 0.0, 0.0]])  # row 2 is ignored
    t = torch.tensor([1, target, -100])
    for fn in (hem_loss, mm_loss):
        with pytest.raises(ValueError, match=message):
            fn(x, t, 1.0)
    # check_finite=False: NaN, the loss (every entry) and every entry of the gradient;
    # the kernel gave 0.0 here and the torch implementations NaN.
    for reduction in ("mean", "sum", "none"):
        for fn in (hem_loss, mm_loss):
            xg = x.clone().requires_grad_(True)
            loss = fn(xg, t, 1.0, check_finite=False, reduction=reduction)
            assert loss.shape == (() if reduction != "none" else (3,))
            assert loss.dtype == torch.float32 and torch.isnan(loss).all(), (fn, reduction)
            loss.sum().backward()
            assert torch.isnan(xg.grad).all(), (fn, reduction)


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
def test_avg_factor_of_zero_follows_mmseg(implementation):
    # mmseg divides by avg_factor + eps, so that an empty batch (avg_factor 0) gives 0.
    x = torch.randn(6, 4, requires_grad=True)
    t = torch.full((6,), 255)
    for avg in (0, 0.0, torch.tensor(0.0), torch.tensor(0)):
        loss = hem_loss(x, t, 0.5, ignore_index=255, avg_factor=avg)
        assert loss.item() == 0.0 and loss.requires_grad
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    total = hem_loss(x, t, 0.5, reduction="sum")
    torch.testing.assert_close(hem_loss(x, t, 0.5, avg_factor=0), total / EPS)
    torch.testing.assert_close(hem_loss(x, t, 0.5, avg_factor=torch.tensor([4.0])), total / 4)
    torch.testing.assert_close(mm_loss(x, t, avg_factor=2), mm_loss(x, t, reduction="sum") / 2)


@pytest.mark.parametrize("implementation", ["reference", "chunked", "cpu_kernel"], indirect=True)
@pytest.mark.parametrize("kind", [list, tuple])
def test_class_weight_as_a_list_or_tuple(implementation, kind):
    # A list raised AttributeError ('list' object has no attribute 'dim').
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 2, generator=gen, requires_grad=True)
    t = torch.randint(0, 3, (8, 2), generator=gen)
    values = [0.5, 2.0, 0.0]
    for fn in (hem_loss, mm_loss):
        got = fn(x, t, 0.7, class_weight=kind(values))
        want = fn(x, t, 0.7, class_weight=torch.tensor(values))
        torch.testing.assert_close(got, want)
    x64 = x.detach().double()
    got = hem_loss(x64, t, 0.7, class_weight=kind(values), reduction="none")
    assert got.dtype == torch.float64
    torch.testing.assert_close(
        got, hem_loss(x64, t, 0.7, class_weight=torch.tensor(values), reduction="none")
    )
    crit = HEMLoss(margin=0.7, class_weight=kind(values), mask_value=None)
    torch.testing.assert_close(crit(x, t), hem_loss(x, t, 0.7, class_weight=torch.tensor(values)))
