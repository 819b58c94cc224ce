"""settled_mask against the core's errors, the slow reference and the loss's gradient."""

from __future__ import annotations

import random

import pytest
import torch
from helpers.reference import reference_errors

from hem_plugins import hem_loss, mm_loss, settled_mask

CLASSES = [2, 3, 5, 10]
SPATIAL = [(), (5,), (2, 3)]


def make_case(seed: int):
    """Logits and margins on a grid of quarters, so that exact ties (error exactly 0) occur."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    c = CLASSES[seed % len(CLASSES)]
    spatial = SPATIAL[(seed // len(CLASSES)) % len(SPATIAL)]
    n = rng.randint(1, 8)
    logits = torch.randint(-6, 7, (n, c, *spatial), generator=gen).double() / 4
    target = torch.randint(0, c, (n, *spatial), generator=gen)
    # Push some target logits well above the rest: those rows are settled.
    boost = (torch.rand(target.shape, generator=gen) < 0.4).double() * 4
    logits.scatter_add_(1, target.unsqueeze(1), boost.unsqueeze(1))
    ignore_index = rng.choice([-100, 255])
    target[torch.rand(target.shape, generator=gen) < 0.2] = ignore_index
    if rng.random() < 0.5:
        margin = torch.randint(0, 6, (c,), generator=gen).double() / 4
    else:
        margin = rng.choice([0.0, 0.25, 1.0, 1.5])
    return logits, target, margin, ignore_index


def reference_settled(logits, target, margin, ignore_index):
    rows, _ = reference_errors(logits, target, margin, ignore_index, 1, None, None)
    out = [valid and all(float(e) == 0.0 for e in errs) for _, valid, errs in rows]
    # reference rows run over (N, d1, ...) in the order of movedim(1, -1).reshape(-1, C)
    return torch.tensor(out).reshape(target.shape)


@pytest.mark.parametrize("seed", range(48))
def test_matches_reference_and_core(seed):
    logits, target, margin, ignore_index = make_case(seed)
    got = settled_mask(logits, target, margin, ignore_index=ignore_index)
    assert got.dtype == torch.bool and got.shape == target.shape
    assert torch.equal(got, reference_settled(logits, target, margin, ignore_index))
    # The core's own per-row errors: mm_loss 'none' is sum_i e[j, i] / C on valid rows.
    valid = target != ignore_index
    per_row = mm_loss(logits, target, margin, ignore_index=ignore_index, reduction="none")
    assert torch.equal(got, (per_row == 0) & valid)


@pytest.mark.parametrize("seed", range(12))
def test_settled_rows_have_zero_loss_and_gradient(seed):
    logits, target, margin, ignore_index = make_case(seed)
    x = logits.clone().requires_grad_(True)
    mask = settled_mask(x, target, margin, ignore_index=ignore_index)
    assert not mask.requires_grad
    loss = hem_loss(x, target, margin, ignore_index=ignore_index, reduction="none")
    assert torch.all(loss[mask] == 0)
    hem_loss(x, target, margin, ignore_index=ignore_index).backward()
    grad_rows = x.grad.movedim(1, -1)[mask]  # (settled rows, C)
    assert torch.all(grad_rows == 0)


def test_ties_ignored_rows_nan_and_masked_units():
    logits = torch.tensor(
        [
            [2.0, 1.0, 0.0],  # tie: x_t - x_1 == margin, error exactly 0
            [2.0, 1.5, 0.0],  # error 0.5
            [9.0, 0.0, 0.0],  # ignored
            [float("nan"), 0.0, 0.0],  # NaN is never settled
            [1.0, -1000.0, -1000.0],  # Avalanche's masked units do not count
        ]
    )
    target = torch.tensor([0, 0, -100, 0, 0])
    assert settled_mask(logits, target, 1.0).tolist() == [True, False, False, False, True]
    # HEM+: the target class's margin decides
    logits2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    margins = torch.tensor([0.5, 2.0])
    assert settled_mask(logits2, torch.tensor([0, 1]), margins).tolist() == [True, False]
    # half precision goes through float32 like the loss
    assert settled_mask(logits.half(), target, 1.0).tolist() == [True, False, False, False, True]


def test_whole_image_settled_recipe():
    logits = torch.zeros(2, 3, 2, 2)
    logits[:, 0] = 5.0  # every pixel predicts class 0 by 5
    target = torch.zeros(2, 2, 2, dtype=torch.long)
    target[0, 0, 0] = 255  # image 0: one ignored pixel, the rest settled
    target[1, 1, 1] = 2  # image 1: one wrong pixel
    rows = settled_mask(logits, target, 1.0, ignore_index=255)
    image = (rows | (target == 255)).flatten(1).all(1)
    assert image.tolist() == [True, False]


def test_bad_input_is_named():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="target shape"):
        settled_mask(x, torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="per-class margin has 2 entries"):
        settled_mask(x, torch.zeros(4, dtype=torch.long), torch.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        settled_mask(x, torch.zeros(4, dtype=torch.long), -1.0)
    with pytest.raises(ValueError, match=r"\[0, C\)|range|class"):
        settled_mask(x, torch.tensor([0, 1, 2, 7]), 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for seed in range(8):
        logits, target, margin, ignore_index = make_case(seed)
        cpu = settled_mask(logits, target, margin, ignore_index=ignore_index)
        m = margin.cuda() if isinstance(margin, torch.Tensor) else margin
        gpu = settled_mask(logits.cuda(), target.cuda(), m, ignore_index=ignore_index)
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), cpu)


def test_kept_mask_is_the_set_hem_averages():
    from hem_plugins import hem_loss, mm_loss
    from hem_plugins.settled import kept_mask

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (16,), generator=g)
    t[3] = -100  # an ignored row keeps nothing
    kept = kept_mask(x, t, 1.0)
    assert kept.shape == x.shape and not kept[3].any()
    errors = (1.0 - x.gather(1, t.clamp_min(0)[:, None]) + x).clamp_min(0)
    errors.scatter_(1, t.clamp_min(0)[:, None], 0.0)
    errors[3] = 0
    # HEM's loss is the mean of exactly the kept errors.
    assert torch.allclose(hem_loss(x, t, 1.0), errors[kept].mean())
    nonzero = kept_mask(x, t, 1.0, threshold=False)
    assert torch.equal(nonzero, errors > 0) and nonzero.sum() >= kept.sum()
    assert torch.allclose(mm_loss(x[t >= 0], t[t >= 0], 1.0) * 15 * 5, errors.sum())
    assert kept_mask(x[:0], t[:0], 1.0).shape == (0, 5)
