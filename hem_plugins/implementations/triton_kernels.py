"""The Triton implementation (CUDA): the two forward passes and the backward as kernels.

The same three steps as ``chunked.TorchBackend`` (see ``chunked.py``), each one
kernel over tiles of ``BLOCK_R`` rows by ``BLOCK_C`` classes of the ``(N, C, S)``
logits, read in place through their strides (row ``j`` is ``(j // S, j % S)``).
Per-tile partial sums go to small buffers that torch sums (deterministic).
The row preparation (targets, validity, margin shift) is a few torch ops over
the ``(N, 1, S)`` rows. :class:`TritonBackend` plugs them into
``chunked.TwoPassFunction``. ``p = 2`` and float64 logits are not covered (the
automatic choice runs them on the chunked torch ops). The kernels' logic is tested
on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``,
``tests/implementations/test_triton_interpreter.py``).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

if int(triton.__version__.split(".")[0]) < 3:
    # torch 2.1-2.3 bring triton 2.x; the automatic choice then runs CUDA calls on `chunked`.
    raise ImportError(
        f"triton {triton.__version__} is older than 3.0, which these kernels need "
        "(tl.PropagateNan; the interpreter on CPU tensors)"
    )


@triton.jit
def _load_errors(
    x_ptr, base, c, cmask, t, sh, rw, rmask, sC, P2: tl.constexpr, HAS_RW: tl.constexpr
):
    m = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + base[:, None] + c[None, :] * sC, mask=m, other=0.0)
    x = x.to(sh.dtype)
    e = tl.maximum(x - sh[:, None], 0.0, propagate_nan=tl.PropagateNan.ALL)
    e = tl.where(m & (c[None, :] != t[:, None]), e, 0.0)
    if P2:
        e = e * e
    if HAS_RW:
        e = e * rw[:, None]
    return x, e, m


@triton.jit
def error_sum_kernel(
    x_ptr, t_ptr, sh_ptr, rw_ptr, valid_ptr, part_ptr, cnt_ptr,
    NR, C, S, sN, sC, sS, mask_value,
    P2: tl.constexpr, HAS_RW: tl.constexpr, HAS_MV: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    j = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = j < NR
    base = (j // S).to(tl.int64) * sN + (j % S).to(tl.int64) * sS
    t = tl.load(t_ptr + j, mask=rmask, other=0)
    sh = tl.load(sh_ptr + j, mask=rmask, other=0.0)
    rw = sh
    if HAS_RW:
        rw = tl.load(rw_ptr + j, mask=rmask, other=0.0)
    acc = tl.zeros([BLOCK_R], dtype=sh.dtype)
    cnt = tl.zeros([BLOCK_R], dtype=tl.int32)
    if HAS_MV:
        valid = tl.load(valid_ptr + j, mask=rmask, other=0) != 0
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        x, e, m = _load_errors(x_ptr, base, c, c < C, t, sh, rw, rmask, sC, P2, HAS_RW)
        acc += tl.sum(e, axis=1)
        if HAS_MV:
            active = m & valid[:, None] & (x != mask_value) & (x != float("-inf"))
            cnt += tl.sum(active.to(tl.int32), axis=1)
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))
    if HAS_MV:
        tl.store(cnt_ptr + pid, tl.sum(cnt, axis=0))


@triton.jit
def kept_kernel(
    x_ptr, t_ptr, sh_ptr, rw_ptr, mask_ptr, part_ptr, cnt_ptr, rowsum_ptr, ebar_ptr,
    NR, C, S, sN, sC, sS,
    P2: tl.constexpr, HAS_RW: tl.constexpr, ROW_SUMS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    j = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = j < NR
    n = (j // S).to(tl.int64)
    s = (j % S).to(tl.int64)
    base = n * sN + s * sS
    mbase = n * C * S + s  # the mask is a contiguous (N, C, S) tensor
    t = tl.load(t_ptr + j, mask=rmask, other=0)
    sh = tl.load(sh_ptr + j, mask=rmask, other=0.0)
    rw = sh
    if HAS_RW:
        rw = tl.load(rw_ptr + j, mask=rmask, other=0.0)
    ebar = tl.load(ebar_ptr)  # on the device: the host never reads it
    acc = tl.zeros([BLOCK_R], dtype=sh.dtype)
    cnt = tl.zeros([BLOCK_R], dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        x, e, m = _load_errors(x_ptr, base, c, c < C, t, sh, rw, rmask, sC, P2, HAS_RW)
        kept = m & (e > ebar)
        tl.store(mask_ptr + mbase[:, None] + c[None, :] * S, kept.to(tl.uint8), mask=m)
        acc += tl.sum(tl.where(kept, e, 0.0), axis=1)
        cnt += tl.sum(kept.to(tl.int32), axis=1)
    if ROW_SUMS:
        tl.store(rowsum_ptr + j, acc, mask=rmask)
    tl.store(part_ptr + pid, tl.sum(acc, axis=0))
    tl.store(cnt_ptr + pid, tl.sum(cnt, axis=0))


@triton.jit
def grad_kernel(
    mask_ptr, t_ptr, coef_ptr, grad_ptr, NR, C, S,
    ROW_COEF: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    j = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = j < NR
    n = (j // S).to(tl.int64)
    s = (j % S).to(tl.int64)
    mbase = n * C * S + s  # mask and gradient are contiguous (N, C, S) tensors
    t = tl.load(t_ptr + j, mask=rmask, other=0)
    if ROW_COEF:
        coef = tl.load(coef_ptr + j, mask=rmask, other=0.0)
    else:
        coef = tl.zeros([BLOCK_R], dtype=tl.float32) + tl.load(coef_ptr)
    count = tl.zeros([BLOCK_R], dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):  # kept entries per row, for the target's gradient
        c = c0 + tl.arange(0, BLOCK_C)
        m = rmask[:, None] & (c < C)[None, :]
        k = tl.load(mask_ptr + mbase[:, None] + c[None, :] * S, mask=m, other=0)
        count += tl.sum(k.to(tl.int32), axis=1)
    target_grad = -count.to(coef.dtype) * coef
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = rmask[:, None] & (c < C)[None, :]
        off = mbase[:, None] + c[None, :] * S
        k = tl.load(mask_ptr + off, mask=m, other=0)
        g = k.to(coef.dtype) * coef[:, None]
        g = tl.where(c[None, :] == t[:, None], target_grad[:, None], g)
        tl.store(grad_ptr + off, g.to(grad_ptr.dtype.element_ty), mask=m)


def _on(device: torch.device):
    """Launch on the tensors' GPU (Triton uses the current device); no-op off CUDA (interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


LOGIT_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
"""Logit dtypes the kernels take (computed in float32); float64 runs on the chunked torch ops."""


def tile_shape(c: int, contiguous_classes: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C): wide along C when classes are contiguous ((N, C) logits).

    Three tile shapes in all, so that every variant the backend can launch is
    compiled ahead of time by the tests (:func:`variants`).
    """
    if contiguous_classes:
        return (16, 32) if c <= 32 else (16, 256)
    return 128, 32


BLOCKS = ((16, 32), (16, 256), (128, 32))
"""Every ``(BLOCK_R, BLOCK_C)`` that :func:`tile_shape` returns."""


def variants():
    """``(name, kernel, signature, constexprs)`` of every variant :class:`TritonBackend` launches.

    Signatures in Triton's notation (``"*fp32"``, ``"i32"``, ...) with 32-bit
    integer arguments, for ``triton.compile(ASTSource(...), target=...)``.
    """
    import itertools

    ints = dict.fromkeys(("NR", "C", "S", "sN", "sC", "sS"), "i32")
    for (lt, xt), (br, bc) in itertools.product(LOGIT_TYPES.items(), BLOCKS):
        common = {"t_ptr": "*i64", "sh_ptr": "*fp32", "rw_ptr": "*fp32"}
        blocks = {"BLOCK_R": br, "BLOCK_C": bc}
        for has_rw, flag in itertools.product((False, True), repeat=2):
            sig = {"x_ptr": f"*{xt}", **common, "valid_ptr": "*u8", "part_ptr": "*fp32"}
            sig |= {"cnt_ptr": "*i32", **ints, "mask_value": "fp32"}
            const = {"P2": False, "HAS_RW": has_rw, "HAS_MV": flag, **blocks}
            yield f"error_sum[{lt}, {const}]", error_sum_kernel, sig, const
            sig = {"x_ptr": f"*{xt}", **common, "mask_ptr": "*u8", "part_ptr": "*fp32"}
            sig |= {"cnt_ptr": "*i32", "rowsum_ptr": "*fp32", "ebar_ptr": "*fp32", **ints}
            const = {"P2": False, "HAS_RW": has_rw, "ROW_SUMS": flag, **blocks}
            yield f"kept[{lt}, {const}]", kept_kernel, sig, const
        for row_coef in (False, True):
            sig = {"mask_ptr": "*u8", "t_ptr": "*i64", "coef_ptr": "*fp32", "grad_ptr": f"*{xt}"}
            sig |= {"NR": "i32", "C": "i32", "S": "i32"}
            const = {"ROW_COEF": row_coef, **blocks}
            yield f"grad[{lt}, {const}]", grad_kernel, sig, const


class TritonBackend:
    """``error_sum``, ``kept`` and ``grad`` of ``chunked.TorchBackend`` as Triton kernels (p = 1)."""

    @staticmethod
    def error_sum(x3, rows, p, mask_value, dtype):
        n, c, s = x3.shape
        flags = rows.fill(x3, slice(None), slice(None))
        rows.finish([flags])
        br, bc = tile_shape(c, x3.stride(1) == 1 and s == 1)
        grid = (-(-n * s // br),)
        part = torch.empty(grid[0], dtype=dtype, device=x3.device)
        cnt = torch.empty(grid[0], dtype=torch.int32, device=x3.device)
        rw = rows.row_weight if rows.row_weight is not None else rows.shift
        with _on(x3.device):
            error_sum_kernel[grid](
                x3, rows.t, rows.shift, rw, rows.valid.view(torch.uint8), part, cnt,
                n * s, c, s, x3.stride(0), x3.stride(1), x3.stride(2),
                0.0 if mask_value is None else float(mask_value),
                P2=p == 2, HAS_RW=rows.row_weight is not None, HAS_MV=mask_value is not None,
                BLOCK_R=br, BLOCK_C=bc,
            )  # fmt: skip
        total = part.sum()
        count = rows.num_valid * c if mask_value is None else cnt.sum(dtype=torch.int64)
        return total, count

    @staticmethod
    def kept(x3, rows, p, ebar, dtype, want_row_sums):
        n, c, s = x3.shape
        mask = torch.empty(x3.shape, dtype=torch.bool, device=x3.device)
        row_sum = torch.empty((n, 1, s), dtype=dtype, device=x3.device)
        br, bc = tile_shape(c, x3.stride(1) == 1 and s == 1)
        grid = (-(-n * s // br),)
        part = torch.empty(grid[0], dtype=dtype, device=x3.device)
        cnt = torch.empty(grid[0], dtype=torch.int32, device=x3.device)
        rw = rows.row_weight if rows.row_weight is not None else rows.shift
        # ebar: a 0-dim tensor on the device (a float from the interpreter tests' callers too)
        ebar_t = torch.as_tensor(ebar, dtype=dtype).to(x3.device).reshape(1)
        with _on(x3.device):
            kept_kernel[grid](
                x3, rows.t, rows.shift, rw, mask.view(torch.uint8), part, cnt, row_sum,
                ebar_t, n * s, c, s, x3.stride(0), x3.stride(1), x3.stride(2),
                P2=p == 2, HAS_RW=rows.row_weight is not None, ROW_SUMS=want_row_sums,
                BLOCK_R=br, BLOCK_C=bc,
            )  # fmt: skip
        return (
            mask,
            None,
            part.sum(),
            cnt.sum(dtype=torch.int64),
            row_sum if want_row_sums else None,
            None,
        )

    @staticmethod
    def grad(mask, layout, shape, t, coef, kept_raw, x_dtype, dtype):
        assert kept_raw is None, "p = 2 runs on the chunked torch ops"
        n, c, s = shape
        grad = torch.empty(mask.shape, dtype=x_dtype, device=mask.device)
        br, bc = tile_shape(c, s == 1)
        grid = (-(-n * s // br),)
        row_coef = coef.dim() > 0
        coef = coef.expand(n, 1, s).contiguous() if row_coef else coef.reshape(1)
        with _on(mask.device):
            grad_kernel[grid](
                mask.view(torch.uint8), t, coef.to(dtype), grad, n * s, c, s,
                ROW_COEF=row_coef, BLOCK_R=br, BLOCK_C=bc,
            )  # fmt: skip
        return grad
