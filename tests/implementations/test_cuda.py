"""CUDA: the Triton implementation against the reference, and calls that do not synchronise
with the host.

Skipped without a CUDA device; ``tools/bench_gpu.sh`` runs them on one.
``torch.cuda.set_sync_debug_mode("error")`` turns every host synchronisation
(``.item()``, a blocking copy to the host, ...) into an error.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hem_plugins import HEMLoss, HEMPlusLoss, hem_loss, implementations

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SHAPES = [(32, 10), (256, 100), (2, 19, 64, 128), (2, 150, 16, 16)]


def _inputs(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, c, *spatial = shape
    x = torch.randn(shape, generator=gen).to("cuda", dtype).requires_grad_(True)
    t = torch.randint(0, c, (n, *spatial), generator=gen)
    t[torch.rand(t.shape, generator=gen) < 0.05] = 255
    return x, t.cuda()


def _criteria(c):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hem_loss": lambda x, t, **kw: hem_loss(x, t, 0.5, ignore_index=255, **kw),
            "hem_loss HEM+": lambda x, t, **kw: hem_loss(
                x, t, torch.linspace(0.2, 1.0, c, device="cuda"), ignore_index=255, **kw
            ),
            "HEMLoss": HEMLoss(margin=0.5, ignore_index=255, check_finite=False).cuda(),
            "HEMPlusLoss counts": HEMPlusLoss(
                class_counts=list(range(1, c + 1)), ignore_index=255, check_finite=False
            ).cuda(),
            "HEMPlusLoss online": HEMPlusLoss(
                num_samples=100, ignore_index=255, check_finite=False
            ).cuda(),
        }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_no_host_sync_with_check_finite_false(shape, dtype):
    x, t = _inputs(shape, dtype)
    criteria = _criteria(shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in criteria.items():  # warm-up: kernels compiled, first-call warnings
            (fn(x, t, check_finite=False) if name.startswith("hem_loss") else fn(x, t)).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name, fn in criteria.items():
            for reduction in ("mean", "sum", "none"):
                if name.startswith("hem_loss"):
                    loss = fn(x, t, check_finite=False, reduction=reduction)
                else:
                    fn.reduction = reduction
                    loss = fn(x, t)
                (loss.sum() if reduction == "none" else loss).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.parametrize("shape", SHAPES)
def test_at_most_one_host_sync_with_the_checks(shape):
    x, t = _inputs(shape)
    hem_loss(x, t, 0.5, ignore_index=255).backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = hem_loss(x, t, 0.5, ignore_index=255)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_values_match_the_reference(shape, dtype):
    x, t = _inputs(shape, dtype, seed=1)
    for check_finite in (True, False):
        for reduction in ("mean", "sum", "none"):
            got_x = x.detach().clone().requires_grad_(True)
            want_x = x.detach().clone().requires_grad_(True)
            probe = torch.randn(t.shape, device="cuda")
            with implementations.use("triton"):
                got = hem_loss(
                    got_x, t, 0.5, ignore_index=255, reduction=reduction, check_finite=check_finite
                )
            with implementations.use("reference"):
                want = hem_loss(want_x, t, 0.5, ignore_index=255, reduction=reduction)
            (got * probe).sum().backward()
            (want * probe).sum().backward()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_x.grad, want_x.grad)


def test_online_counts_stay_on_the_device():
    crit = HEMPlusLoss(ignore_index=255).cuda()
    x, t = _inputs((4, 7, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit(x, t).backward()
    assert crit.class_counts.device.type == "cuda" and crit.margins.device.type == "cuda"
    want = torch.bincount(t[t != 255].flatten(), minlength=7).double()
    torch.testing.assert_close(crit.class_counts.cpu(), want.cpu())


@pytest.mark.parametrize("divisor", ["rows", "floor", ("floor", 0.5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_divisor_on_triton(shape, divisor):
    """docs/divisor.md: the Triton implementation's divisor equals the reference's, and a
    call with check_finite=False still makes no host synchronisation."""
    x, t = _inputs(shape, seed=2)
    got_x = x.detach().clone().requires_grad_(True)
    want_x = x.detach().clone().requires_grad_(True)
    with implementations.use("triton"):
        got = hem_loss(got_x, t, 0.5, ignore_index=255, divisor=divisor)
    with implementations.use("reference"):
        want = hem_loss(want_x, t, 0.5, ignore_index=255, divisor=divisor)
    got.backward()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x.grad, want_x.grad)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        hem_loss(x, t, 0.5, ignore_index=255, check_finite=False, divisor=divisor).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
