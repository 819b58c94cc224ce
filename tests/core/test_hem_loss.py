"""hem_loss and mm_loss against the naive reference of section 2, over many random cases."""

from __future__ import annotations

import pytest
import torch
from helpers.cases import make_case
from helpers.reference import reference_hem, reference_mm

from hem_plugins import hem_loss, mm_loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", range(30))
def test_matches_reference_values_and_gradients(seed, reduction):
    logits, target, margin, kwargs, rng = make_case(seed)
    if reduction == "mean" and rng.random() < 0.3:
        kwargs["avg_factor"] = rng.choice([1.0, 7.5, 100.0])
    x = logits.clone().requires_grad_(True)
    got = hem_loss(x, target, margin, reduction=reduction, **kwargs)
    xr = logits.clone().requires_grad_(True)
    want = reference_hem(xr, target, margin, reduction=reduction, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    probe = torch.randn(got.shape, dtype=got.dtype) if reduction == "none" else 1.0
    (got * probe).sum().backward()
    if want.requires_grad:
        (want * probe).sum().backward()
        want_grad = xr.grad
    else:
        want_grad = torch.zeros_like(logits)
    torch.testing.assert_close(x.grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_float32_close_to_float64(seed):
    logits, target, margin, kwargs, _ = make_case(seed, dtype=torch.float32)
    got = hem_loss(logits, target, margin, **kwargs)
    assert got.dtype == torch.float32
    want = reference_hem(logits, target, margin, **kwargs)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", range(12))
def test_mm_loss_matches_reference(seed, reduction):
    logits, target, margin, kwargs, _ = make_case(seed)
    x = logits.clone().requires_grad_(True)
    got = mm_loss(x, target, margin, reduction=reduction, **kwargs)
    xr = logits.clone().requires_grad_(True)
    want = reference_mm(xr, target, margin, reduction=reduction, **kwargs)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    if want.requires_grad:
        want.sum().backward()
        torch.testing.assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_mm_loss_equals_torch_multi_margin(p, margin):
    gen = torch.Generator().manual_seed(p)
    x = torch.randn(32, 10, generator=gen)
    t = torch.randint(0, 10, (32,), generator=gen)
    w = torch.rand(10, generator=gen)
    F = torch.nn.functional
    for red in ("mean", "sum", "none"):
        torch.testing.assert_close(
            mm_loss(x, t, margin, p=p, reduction=red),
            F.multi_margin_loss(x, t, p=p, margin=margin, reduction=red),
        )
        torch.testing.assert_close(
            mm_loss(x, t, margin, p=p, reduction=red, class_weight=w),
            F.multi_margin_loss(x, t, p=p, margin=margin, weight=w, reduction=red),
        )


def test_sum_of_none_equals_sum():
    logits, target, margin, kwargs, _ = make_case(7)
    none = hem_loss(logits, target, margin, reduction="none", **kwargs)
    assert none.shape == target.shape
    torch.testing.assert_close(
        none.sum(), hem_loss(logits, target, margin, reduction="sum", **kwargs)
    )


def test_threshold_ties_are_not_kept():
    # Row errors 1.5 and 0.5 over 4 entries: ebar = 0.5 exactly; only 1.5 is kept.
    x = torch.tensor([[0.0, 0.5], [0.0, -0.5]], requires_grad=True)
    t = torch.tensor([0, 0])
    loss = hem_loss(x, t, 1.0)
    assert loss.item() == 1.5
    loss.backward()
    assert x.grad.tolist() == [[-1.0, 1.0], [0.0, 0.0]]


def test_all_equal_errors_keep_everything_on_the_first_step():
    # Zero logits: every off-target error equals the margin, above the mean over C entries.
    x = torch.zeros(4, 10, requires_grad=True)
    t = torch.arange(4)
    loss = hem_loss(x, t, 0.5)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert bool((x.grad != 0).all())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_kept_set_gives_zero_in_the_graph(reduction):
    x = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]], requires_grad=True)
    loss = hem_loss(x, torch.tensor([0, 1]), 1.0, reduction=reduction)
    assert loss.sum().item() == 0.0
    loss.sum().backward()
    assert x.grad is not None and bool((x.grad == 0).all())


@pytest.mark.parametrize("fn", [hem_loss, mm_loss])
def test_all_ignored_batch_gives_zero_not_nan(fn):
    x = torch.randn(3, 4, 2, 2, requires_grad=True)
    t = torch.full((3, 2, 2), 255)
    loss = fn(x, t, 1.0, ignore_index=255)
    assert loss.item() == 0.0
    loss.backward()
    assert bool((x.grad == 0).all())


def test_hem_plus_with_balanced_counts_equals_hem():
    from hem_plugins import class_margins, margin_for_dataset

    x = torch.randn(40, 10)
    t = torch.randint(0, 10, (40,))
    per_class = class_margins([100] * 10)
    torch.testing.assert_close(hem_loss(x, t, per_class), hem_loss(x, t, margin_for_dataset(1000)))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randint(0, 5, (4, 3), generator=gen)
    t[0, 0] = -100
    w = torch.rand(4, 3, dtype=torch.float64, generator=gen)
    for p in (1, 2):
        for red in ("mean", "sum", "none"):
            assert torch.autograd.gradcheck(
                lambda inp, p=p, red=red: hem_loss(
                    inp,
                    t,
                    torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
                    p=p,
                    reduction=red,
                    weight=w,
                ),
                (x,),
            )


def test_spatial_equals_flattened_rows():
    x = torch.randn(2, 6, 3, 5)
    t = torch.randint(0, 6, (2, 3, 5))
    flat_x = x.permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(hem_loss(x, t, 0.7), hem_loss(flat_x, t.reshape(-1), 0.7))


def test_non_contiguous_input():
    base = torch.randn(6, 3, 5, 4)  # (N, H, W, C) -> logits as a permuted view
    x = base.permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    t = torch.randint(0, 4, (6, 3, 5))
    torch.testing.assert_close(hem_loss(x, t, 0.5), hem_loss(x.contiguous(), t, 0.5))
    xs = torch.randn(10, 8)[:, ::2]
    ts = torch.randint(0, 4, (10,))
    torch.testing.assert_close(hem_loss(xs, ts, 0.5), hem_loss(xs.contiguous(), ts, 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    x32 = torch.randn(16, 7, 3)
    t = torch.randint(0, 7, (16, 3))
    x = x32.to(dtype).requires_grad_(True)
    loss = hem_loss(x, t, 0.4)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, hem_loss(x.detach().float(), t, 0.4))
    loss.backward()
    assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("mask", [-1000.0, float("-inf")])
def test_masked_units_give_zero_error_and_finite_gradients(mask):
    x = torch.randn(8, 6)
    x[:, 4:] = mask
    t = torch.randint(0, 4, (8,))
    xg = x.clone().requires_grad_(True)
    loss = hem_loss(xg, t, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(xg.grad).all())
    assert bool((xg.grad[:, 4:] == 0).all())
    per_row = hem_loss(x, t, 1.0, reduction="none")
    assert bool(torch.isfinite(per_row).all())


@pytest.mark.parametrize("mask", [-1000.0, float("-inf")])
def test_mask_value_leaves_masked_units_out_of_the_threshold(mask):
    gen = torch.Generator().manual_seed(0)
    active = torch.randn(12, 4, generator=gen)
    t = torch.randint(0, 4, (12,), generator=gen)
    x = torch.cat([active, torch.full((12, 6), mask)], dim=1).requires_grad_(True)
    a = active.clone().requires_grad_(True)
    loss = hem_loss(x, t, 1.0, mask_value=-1000.0)
    want = hem_loss(a, t, 1.0)
    torch.testing.assert_close(loss, want)
    loss.backward()
    want.backward()
    torch.testing.assert_close(x.grad[:, :4], a.grad)
    # Without mask_value the masked units dilute the threshold: a different loss.
    assert not torch.allclose(hem_loss(x, t, 1.0), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    logits, target, margin, kwargs, _ = make_case(11, dtype=torch.float32)
    cpu = hem_loss(logits, target, margin, **kwargs)
    dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    m = margin.cuda() if isinstance(margin, torch.Tensor) else margin
    gpu = hem_loss(logits.cuda(), target.cuda(), m, **dev)
    torch.testing.assert_close(gpu.cpu(), cpu)
