"""An empty batch (no rows) returns what an all-ignored batch returns, on every implementation."""

from __future__ import annotations

import warnings

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss, mm_loss, settled_mask


@pytest.mark.parametrize(
    "implementation", ["auto", "reference", "chunked", "cpu_kernel"], indirect=True
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0, 3), (0, 4, 5, 2), (2, 4, 0)])
def test_hem_loss_of_no_rows_is_the_all_ignored_result(implementation, shape, reduction):
    x = torch.randn(shape, requires_grad=True)
    t = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    loss = hem_loss(x, t, 0.5, reduction=reduction)
    if reduction == "none":
        assert loss.shape == t.shape and loss.dtype == torch.float32
        loss.sum().backward()
    else:
        # The all-ignored batch of the same kind: a zero in the graph.
        ignored = hem_loss(
            torch.randn(2, shape[1]), torch.full((2,), -100), 0.5, reduction=reduction
        )
        assert loss.shape == () and loss.item() == ignored.item() == 0.0
        assert loss.requires_grad
        loss.backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mm_loss_and_weights_of_no_rows(reduction):
    x = torch.randn(0, 3, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    out = mm_loss(x, t, reduction=reduction)
    assert out.dtype == torch.float64 and out.requires_grad
    assert out.shape == t.shape if reduction == "none" else out.item() == 0.0
    w = torch.ones(0)
    out = hem_loss(x, t, 0.5, weight=w, class_weight=torch.ones(3), reduction=reduction)
    assert out.shape == t.shape if reduction == "none" else out.item() == 0.0


def test_modules_on_an_empty_batch():
    x = torch.randn(0, 4, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        online = HEMPlusLoss()
        assert online(x, t).item() == 0.0
        assert float(online.class_counts.sum()) == 0  # nothing counted
        assert HEMPlusLoss(class_counts=[1, 2, 3, 4])(x, t).item() == 0.0
        loss = HEMLoss(margin=0.3)(x, t)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == x.shape


def test_settled_mask_of_no_rows_is_empty():
    for shape in [(0, 3), (0, 3, 4, 4)]:
        t = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
        m = settled_mask(torch.randn(shape), t, 0.5)
        assert m.dtype == torch.bool and m.shape == t.shape
    m = settled_mask(torch.randn(0, 3), torch.zeros(0, dtype=torch.long), torch.ones(3))
    assert m.shape == (0,)
