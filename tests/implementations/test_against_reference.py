"""The chunked torch ops and the C++ kernel equal the reference implementation, values and
gradients.

Each test runs under the switch (the ``implementation`` fixture of ``tests/conftest.py``):
``chunked`` (with its thread pool) and ``cpu_kernel`` (where it builds), with chunks made
tiny so that the random cases span many chunks and threads. The reference implementation
is itself checked against ``tests/helpers/reference.py`` in ``tests/core/test_hem_loss.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers.cases import make_case, runs_on
from helpers.reference import reference_hem

from hem_plugins import hem_loss, implementations
from hem_plugins.implementations import chunked, thread_pool

BOTH = pytest.mark.parametrize("implementation", ["chunked", "cpu_kernel"], indirect=True)
"""The tests run on the chunked torch ops and on the C++ kernel."""


def run(name: str, logits, target, margin, kwargs, probe=None):
    """Loss and gradient of ``hem_loss`` on implementation ``name``."""
    with implementations.use(name):
        x = logits.clone().requires_grad_(True)
        loss = hem_loss(x, target, margin, **kwargs)
        (loss * probe if probe is not None else loss).sum().backward()
    return loss.detach(), x.grad


@BOTH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", range(12))
def test_equals_the_reference(implementation, seed, reduction, dtype):
    logits, target, margin, kwargs, rng = make_case(seed, dtype=torch.float64)
    logits = logits.to(dtype)
    runs_on(implementation, logits, kwargs["p"])
    if "weight" in kwargs:
        kwargs["weight"] = kwargs["weight"].to(dtype)
    kwargs["reduction"] = reduction
    if reduction == "mean" and rng.random() < 0.3:
        kwargs["avg_factor"] = 7.5
    probe = torch.randn(target.shape, dtype=torch.float64) if reduction == "none" else None
    want, want_grad = run("reference", logits, target, margin, kwargs, probe)
    got, got_grad = run(implementation, logits, target, margin, kwargs, probe)
    assert got.dtype == want.dtype and got_grad.dtype == dtype
    exact = dtype == torch.float64
    torch.testing.assert_close(
        got, want, rtol=1e-12 if exact else 1e-5, atol=1e-12 if exact else 1e-6
    )
    torch.testing.assert_close(
        got_grad, want_grad, rtol=1e-12 if exact else 1e-3, atol=1e-12 if exact else 1e-5
    )


@BOTH
@pytest.mark.parametrize("seed", range(4))
def test_against_the_loop_reference_with_many_chunks(implementation, seed):
    logits, target, margin, kwargs, _ = make_case(seed + 20)
    runs_on(implementation, logits, kwargs["p"])
    x = logits.clone().requires_grad_(True)
    got = hem_loss(x, target, margin, **kwargs)
    xr = logits.clone().requires_grad_(True)
    want = reference_hem(xr, target, margin, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got.backward()
    if want.requires_grad:
        want.backward()
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)


@BOTH
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("mask", [-1000.0, float("-inf")])
def test_mask_value(implementation, mask, p):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 7, generator=gen)
    x[:, 5:] = mask
    t = torch.randint(0, 5, (9,), generator=gen)
    runs_on(implementation, x, p)
    kwargs = dict(mask_value=-1000.0, p=p)
    want, want_grad = run("reference", x, t, 0.8, kwargs)
    got, got_grad = run(implementation, x, t, 0.8, kwargs)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("implementation", ["cpu_kernel"], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 700), (2, 4, 17, 31), (1300, 7), (40, 300)])
def test_kernel_over_many_blocks_and_chunks(implementation, shape, dtype):
    """Rows across many kernel blocks (256 rows) and samples, strided logits, all reductions."""
    gen = torch.Generator().manual_seed(sum(shape))
    n, c = shape[:2]
    logits = torch.randn(*shape[::-1], generator=gen, dtype=torch.float64).permute(
        *range(len(shape) - 1, -1, -1)
    )  # not contiguous: the kernel reads the strides
    logits = logits.to(dtype)
    logits[:, -1] = -1000.0  # a masked unit, as Avalanche's IncrementalClassifier writes
    target = torch.randint(0, c - 1, (n, *shape[2:]), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.1] = -100
    margin = torch.rand(c, generator=gen, dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        kwargs = dict(reduction=reduction, class_weight=torch.rand(c, generator=gen) + 0.5)
        kwargs["mask_value"] = -1000.0 if reduction != "sum" else None
        probe = torch.randn(target.shape, generator=gen, dtype=torch.float64)
        probe = probe if reduction == "none" else None
        want, want_grad = run("reference", logits, target, margin, kwargs, probe)
        got, got_grad = run(implementation, logits, target, margin, kwargs, probe)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_grad, want_grad)


def test_kernel_saves_no_logits():
    x = torch.randn(64, 100, requires_grad=True)
    runs_on("cpu_kernel", x, 1)
    saved = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s)
    with hooks, implementations.use("cpu_kernel"):
        hem_loss(x, torch.randint(0, 100, (64,)), 0.5)
    assert sum(s.numel() * s.element_size() for s in saved) <= x.numel() // 8 + 64 + 8


def test_chunks_cover_every_row_once():
    for n, c, s, elems in [
        (3, 19, 1000, 64),
        (50, 10, 1, 32),
        (4, 1000, 1, 100),
        (2, 5, 3, 1 << 20),
    ]:
        seen = torch.zeros(n, s, dtype=torch.int64)
        for bn, bs in chunked.chunks(n, c, s, elems):
            seen[bn, bs] += 1
        assert bool((seen == 1).all())


@pytest.mark.parametrize("name", ["chunked", "cpu_kernel"])
def test_saves_a_bit_packed_mask_and_small_targets(name):
    x = torch.randn(2, 19, 32, 32, requires_grad=True)
    t = torch.randint(0, 19, (2, 32, 32))
    runs_on(name, x, 1)
    saved = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s)
    with hooks, implementations.use(name):
        hem_loss(x, t, 0.5)
    # One bit per logit and one byte per target (C <= 255), plus scalars; no logits.
    assert sum(s.numel() * s.element_size() for s in saved) <= x.numel() // 8 + t.numel() + 64
    assert all(s.dtype == torch.uint8 for s in saved if s.numel() > 1)


@pytest.mark.parametrize("n", [8, 64, 1000])
def test_pack_bits_round_trip(n):
    bits = (torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.4).to(torch.uint8)
    packed = chunked.pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == n // 8
    assert torch.equal(chunked.unpack_bits(packed), bits)
    assert int(chunked.count_ones(bits)) == int(bits.sum())
    # Entry k is bit k % 8 of byte k // 8.
    assert int(chunked.pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1], dtype=torch.uint8))) == 129


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(12))
def test_cuda_equals_the_reference(seed, dtype):
    """The automatic choice on CUDA: Triton for p = 1, the chunked torch ops for p = 2."""
    logits, target, margin, kwargs, rng = make_case(seed, dtype=torch.float64)
    kwargs = {k: v.to(dtype) if k == "weight" else v for k, v in kwargs.items()}
    kwargs["reduction"] = ["mean", "sum", "none"][seed % 3]
    probe = torch.randn(target.shape, dtype=torch.float64).cuda() if seed % 3 == 2 else None
    to = dict(device="cuda")
    x, t = logits.to(dtype=dtype, **to), target.cuda()
    m = margin.cuda() if isinstance(margin, torch.Tensor) else margin
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    got, got_grad = run("auto", x, t, m, kw, probe)
    want, want_grad = run("reference", x, t, m, kw, probe)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("implementation", ["chunked"], indirect=True)
def test_thread_pool_keeps_the_process_thread_count(implementation):
    import threading

    if torch.get_num_threads() < 2:
        pytest.skip("one intra-op thread: the chunks run on the calling thread, no pool")
    thread_pool.reset()  # a fresh pool, as on first use
    x = torch.randn(16, 10, 4, requires_grad=True)
    hem_loss(x, torch.randint(0, 10, (16, 4)), 0.5).backward()
    pool = thread_pool.current()
    assert pool is not None
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [torch.get_num_threads()]
    workers = list(pool.map(lambda _: torch.get_num_threads(), range(8)))
    assert set(workers) == {1}


def test_kernel_backward_is_once_differentiable():
    x = torch.randn(8, 5, requires_grad=True)
    runs_on("cpu_kernel", x, 1)
    with implementations.use("cpu_kernel"):
        loss = hem_loss(x, torch.randint(0, 5, (8,)), 0.5)
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    # As with @once_differentiable: the gradient is a constant, a second backward raises.
    with pytest.raises(RuntimeError, match="differentiate twice|does not require grad"):
        g.sum().backward()
