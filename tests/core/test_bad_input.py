"""Every bad input gets an error that names the problem."""

from __future__ import annotations

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, class_margins, hem_loss, margin_for_dataset, mm_loss

X = torch.randn(4, 3)
T = torch.tensor([0, 1, 2, 1])


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
        (X, T, {"reduction": "sum", "avg_factor": 3.0}, "avg_factor can only be used"),
    ],
)
def test_functional_errors(fn, logits, target, kwargs, message):
    kwargs = dict(kwargs)
    margin = kwargs.pop("margin", 1.0)
    with pytest.raises((ValueError, TypeError), match=message):
        fn(logits, target, margin, **kwargs)


def test_check_finite_false_skips_the_logit_check():
    x = torch.tensor([[0.0, float("nan"), 1.0], [1.0, 0.0, 0.0]])
    out = hem_loss(x, torch.tensor([0, 0]), 1.0, check_finite=False)
    assert out.dtype == torch.float32  # computed, whatever the value


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
