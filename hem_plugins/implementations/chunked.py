"""The chunked torch implementation, and the two-pass autograd function it shares with Triton.

Same math as the reference implementation (``reference.py``; the equations are in
``hem_plugins.functional``), laid out as ``(N, C, S)`` with no transpose. The forward
makes two passes over the logits:

1. the errors ``e`` (target entry 0, ``p``, row weights) and their sum,
   which gives the threshold ``ebar``;
2. the same errors again, compared with ``ebar``: the kept mask ``K``, the
   sum of the kept errors and their number (and per-row sums for ``'none'``).

Between forward and backward it keeps the mask, the targets in the narrowest
integer type that holds them, the row weights if any and, for ``p = 2`` only,
the kept errors; not the logits. The backward writes the gradient in one pass
over the mask.

:class:`TwoPassFunction` runs the three steps through a *backend*:
:class:`TorchBackend` here (chunks of about :data:`CHUNK_ELEMS` logits on the
CPU, so that a chunk's temporaries stay in cache, spread over the thread pool of
``thread_pool.py``; the mask packed 8 entries a byte) or
``triton_kernels.TritonBackend`` on CUDA (one kernel a step; a byte an entry).
"""

from __future__ import annotations

import sys

import torch
from torch.autograd.function import once_differentiable

from .checks import assert_targets_async, check_rows
from .options import (
    LossOptions,
    backward_coef,
    compute_dtype,
    divisor,
    margin_table,
    num_positions,
    row_margin,
)
from .thread_pool import for_chunks

CHUNK_ELEMS = 1 << 18
"""Logits per chunk on the CPU: 1 MiB of float32, so a chunk and its temporaries stay in L2.

A few large chunks keep Python's per-op overhead small; the C++ kernel cuts its row
ranges to the same size."""


def small_int_dtype(limit: int) -> torch.dtype:
    """Narrowest integer dtype that holds ``0 .. limit``."""
    if limit <= 255:
        return torch.uint8
    if limit <= 32767:
        return torch.int16
    return torch.int32


def chunks(n: int, c: int, s: int, elems: int | None = None) -> list[tuple[slice, slice]]:
    """``(n-slice, s-slice)`` pairs covering ``(N, S)``, about ``elems`` (``CHUNK_ELEMS``) logits each."""
    elems = CHUNK_ELEMS if elems is None else elems
    rows = max(1, elems // c)
    if s >= rows:  # segmentation: one sample at a time, a run of positions
        return [
            (slice(i, i + 1), slice(j, min(j + rows, s)))
            for i in range(n)
            for j in range(0, s, rows)
        ]
    per = max(1, rows // s)  # classification (S = 1) or small maps: several samples
    return [(slice(i, min(i + per, n)), slice(0, s)) for i in range(0, n, per)]


class RowData:
    """Per-row quantities, ``(N, 1, S)``: safe targets, validity, weights, margin shift.

    ``shift = x[j, t_j] - mu_j`` (so ``e = max(0, x - shift)``) on valid rows
    and the largest finite value on invalid ones, so that their errors clamp
    to 0. Everything is filled in chunk by chunk by the first pass
    (:meth:`fill`), while the chunk is in cache and with no op over all rows.
    """

    def __init__(self, x3, target, margin, ignore_index, weight, class_weight, dtype):
        n, c, s = x3.shape
        self.logits, self.target, self.ignore_index, self.num_classes = x3, target, ignore_index, c
        self.target3 = target.reshape(n, 1, s)
        self.weight3 = None if weight is None else weight.reshape(n, 1, s)
        self.class_weight = None
        if class_weight is not None:
            self.class_weight = class_weight.to(device=x3.device, dtype=dtype)
        self.margin = margin_table(margin, dtype, x3.device)
        device = x3.device
        self.t = torch.empty((n, 1, s), dtype=torch.long, device=device)
        self.valid = torch.empty((n, 1, s), dtype=torch.bool, device=device)
        self.shift = torch.empty((n, 1, s), dtype=dtype, device=device)
        self.row_weight = None
        if weight is not None or class_weight is not None:
            self.row_weight = torch.empty((n, 1, s), dtype=dtype, device=device)
        self.bad_target = self.posinf_target = self.num_valid = None  # set by finish()

    def chunk(self, bn, bs):
        """(targets, shift view, row weights or None) of one chunk."""
        rw = None if self.row_weight is None else self.row_weight[bn, :, bs]
        return self.t[bn, :, bs], self.shift[bn, :, bs], rw

    def fill(self, xc, bn, bs):
        """Fill the rows of one chunk; returns (bad target, +inf target, valid rows) as tensors."""
        t = self.target3[bn, :, bs]
        c = self.num_classes
        valid = self.valid[bn, :, bs]
        torch.ne(t, self.ignore_index, out=valid)
        in_range = (t >= 0) & (t < c)
        bad = (valid > in_range).any()  # valid and out of range
        valid &= in_range
        tc = self.t[bn, :, bs]
        torch.mul(t, valid, out=tc)  # 0 on invalid rows
        if self.row_weight is not None:
            rw = self.row_weight[bn, :, bs]
            if self.weight3 is None:
                torch.index_select(self.class_weight, 0, tc.reshape(-1), out=rw.view(-1))
            else:
                rw.copy_(self.weight3[bn, :, bs])
                if self.class_weight is not None:
                    rw.mul_(self.class_weight[tc])
            valid &= rw != 0
        sh = self.shift[bn, :, bs]
        if xc.dtype == sh.dtype:
            torch.gather(xc, 1, tc, out=sh)
        else:
            sh.copy_(xc.gather(1, tc))
        posinf = (torch.isposinf(sh) & valid).any()
        sh.sub_(row_margin(self.margin, tc))
        sh.masked_fill_(~valid, torch.finfo(sh.dtype).max)
        return bad, posinf, valid.sum()

    def finish(self, flags):
        bad, posinf, num_valid = (torch.stack(f) for f in zip(*flags, strict=True))
        self.bad_target, self.posinf_target, self.num_valid = (
            bad.any(),
            posinf.any(),
            num_valid.sum(),
        )


def chunk_errors(xc, sh, tc, p, rw):
    """Weighted errors of one chunk, target entries 0 (a fresh tensor)."""
    e = xc - sh
    e.clamp_min_(0).scatter_(1, tc, 0.0)
    if p == 2:
        e.mul_(e)
    if rw is not None:
        e.mul_(rw)
    return e


class TorchBackend:
    """The three steps in chunked torch ops (CPU, or any device without Triton)."""

    @staticmethod
    def error_sum(x3, rows, p, mask_value, dtype):
        """Sum of the errors and the number of entries in the threshold's mean (0-dim tensors)."""
        n, c, s = x3.shape

        def one(bn, bs):
            xc = x3[bn, :, bs]
            if xc.dtype != dtype:
                xc = xc.to(dtype)
            flags = rows.fill(xc, bn, bs)
            tc, sh, rw = rows.chunk(bn, bs)
            total = chunk_errors(xc, sh, tc, p, rw).sum()
            if mask_value is None:
                return total, None, flags
            active = (xc != mask_value) & (xc != float("-inf")) & rows.valid[bn, :, bs]
            return total, active.sum(), flags

        totals, counts, flags = zip(*for_chunks(one, chunks(n, c, s), x3.device), strict=True)
        rows.finish(flags)
        total = torch.stack(totals).sum()
        if mask_value is None:
            count = rows.num_valid * c
        else:
            count = torch.stack(counts).sum()
        return total, count

    @staticmethod
    def kept(x3, rows, p, ebar, dtype, want_row_sums):
        """Packed mask of ``e > ebar`` and its layout, kept sum and count, per-row sums, raw (p=2).

        The mask is packed chunk by chunk, 8 entries a byte, the chunks one
        after the other: ``layout = (blocks, (start, bytes) per chunk)``.
        """
        n, c, s = x3.shape
        row_sum = torch.empty((n, 1, s), dtype=dtype, device=x3.device) if want_row_sums else None
        blocks = chunks(n, c, s)

        def one(bn, bs):
            xc = x3[bn, :, bs]
            if xc.dtype != dtype:
                xc = xc.to(dtype)
            tc, sh, rw = rows.chunk(bn, bs)
            if p == 1 and rw is None:
                # threshold(e, ebar) zeroes e <= ebar (negative and -inf included): no clamp needed.
                e = torch.sub(xc, sh).scatter_(1, tc, 0.0)
            else:
                e = chunk_errors(xc, sh, tc, p, rw)
            if isinstance(ebar, torch.Tensor):  # on the device (CUDA, p = 2)
                e = torch.where(e > ebar, e, 0.0)
            else:
                torch.nn.functional.threshold_(e, ebar, 0.0)
            m8 = torch.zeros(-(-e.numel() // 8) * 8, dtype=torch.uint8, device=e.device)
            mc = m8[: e.numel()].view(torch.bool).view(e.shape)
            mc.copy_(e)  # kept errors are > ebar >= 0: nonzero exactly on K
            if row_sum is not None:
                torch.sum(e, 1, keepdim=True, out=row_sum[bn, :, bs])
            # p = 2: the backward needs the raw (unsquared, unweighted) kept errors
            raw = (xc - sh).masked_select(mc) if p == 2 else None
            return e.sum(), count_ones(m8), raw, pack_bits(m8)

        sums, counts, kept_raw, packed = zip(*for_chunks(one, blocks, x3.device), strict=True)
        if p == 2:  # chunk order, not the tensor's order: backward walks the same chunks
            kept_raw = (torch.cat(kept_raw), [r.numel() for r in kept_raw])
        else:
            kept_raw = None
        layout = (blocks, _offsets([b.numel() for b in packed]))
        return (
            torch.cat(packed),
            layout,
            torch.stack(sums).sum(),
            torch.stack(counts).sum(),
            row_sum,
            kept_raw,
        )

    @staticmethod
    def grad(packed, layout, shape, t, coef, kept_raw, x_dtype, dtype):
        """Gradient w.r.t. the ``(N, C, S)`` logits: ``coef`` on kept entries, minus their sum at the target.

        ``kept_raw`` (``p = 2``): the kept errors before squaring, in chunk
        order, and how many each chunk holds.
        """
        blocks, where = layout
        grad = torch.empty(shape, dtype=x_dtype, device=packed.device)
        per_row = coef.dim() > 0
        if kept_raw is not None:
            raw, sizes = kept_raw
            raw_at = _offsets(sizes)

        def one(i, bn, bs):
            gc = grad[bn, :, bs]
            g = gc if x_dtype == dtype else torch.empty(gc.shape, dtype=dtype, device=gc.device)
            start, size = where[i]
            m8 = unpack_bits(packed[start : start + size])[: gc.numel()].view(gc.shape)
            if kept_raw is None:
                g.copy_(m8)  # uint8 -> float converts much faster than bool -> float
            else:
                start, size = raw_at[i]
                g.zero_().masked_scatter_(m8.view(torch.bool), raw[start : start + size] * 2.0)
            g.mul_(coef[bn, :, bs] if per_row else coef)
            g.scatter_(1, t[bn, :, bs], g.sum(1, keepdim=True).neg_())
            if g is not gc:
                gc.copy_(g)

        numbered = [(slice(i, i + 1), (i, bn, bs)) for i, (bn, bs) in enumerate(blocks)]
        for_chunks(lambda _, args: one(*args), numbered, packed.device)
        return grad


def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    """(start, size) of consecutive pieces of the given sizes."""
    out, start = [], 0
    for size in sizes:
        out.append((start, size))
        start += size
    return out


_SPREAD = 0x0102040810204080  # byte k of an int64 (0 or 1) -> bit k of its top byte
_BITS = -0x7FBFDFEFF7FBFDFF  # 0x8040201008040201 as an int64: bit k in byte k


LITTLE_ENDIAN = sys.byteorder == "little"
"""The bit packing reads int64s as bytes: on the CPU, :class:`TorchBackend` needs a
little-endian host (:func:`cannot_run`)."""


def _top_bytes(v: torch.Tensor) -> torch.Tensor:
    """The most significant byte of each int64 of ``v`` (little-endian), as a strided uint8 view."""
    return v.view(torch.uint8)[7::8]


def pack_bits(m8: torch.Tensor) -> torch.Tensor:
    """Pack a uint8 tensor of 0/1 (length a multiple of 8) into bytes, entry k -> bit k % 8.

    Returns a strided view (``torch.cat`` of the chunks makes it contiguous).
    """
    return _top_bytes(m8.view(torch.int64) * _SPREAD)


def count_ones(m8: torch.Tensor) -> torch.Tensor:
    """Sum of a uint8 tensor of 0/1 (length a multiple of 8), 8 entries per int64 op."""
    return _top_bytes(m8.view(torch.int64) * 0x0101010101010101).sum()


def unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a uint8 tensor of 0/1, 8 entries per byte."""
    spread = (packed.to(torch.int64) * 0x0101010101010101) & _BITS
    return spread.view(torch.uint8).clamp_max_(1)


def cannot_run(x: torch.Tensor, p: int) -> str | None:
    """Why the chunked torch ops cannot run ``x`` (None: they can). Any device and option;
    on the CPU, a little-endian host (the bit packing)."""
    if not LITTLE_ENDIAN and not x.is_cuda:
        return "its CPU bit packing reads int64s as bytes and needs a little-endian host"
    return None


class TwoPassFunction(torch.autograd.Function):
    """Forward in two passes; backward from the saved mask and per-row targets.

    ``backend``: :class:`TorchBackend` or ``triton_kernels.TritonBackend``, the three
    steps (``error_sum``, ``kept``, ``grad``).

    On the CPU the threshold ``ebar`` comes to the host with the value checks
    (one synchronisation, free there). On CUDA it stays on the device (the
    kept-mask pass reads it from memory): the call synchronises once, for the
    value checks, or not at all with ``check_finite=False``.
    """

    @staticmethod
    def forward(ctx, x, target, margin, opts: LossOptions, inputs, backend):
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, num_positions(x.shape))
        dtype = compute_dtype(x.dtype)
        p = opts.p
        rows = RowData(x3, target, margin, opts.ignore_index, opts.weight, opts.class_weight, dtype)
        total, count = backend.error_sum(x3, rows, p, opts.mask_value, dtype)
        ebar = total / count.clamp_min(1)
        if x.is_cuda:
            if opts.check_finite:
                check_rows(rows, total, True, inputs)
            else:
                assert_targets_async(rows)
        else:
            # non-finite errors (a Python check here): entry.resolve_nonfinite
            (ebar,) = check_rows(rows, total, True, inputs, ebar)
        mask, layout, kept_sum, kept_count, row_sum, kept_raw = backend.kept(
            x3, rows, p, ebar, dtype, opts.reduction == "none"
        )
        div = None
        if opts.reduction == "mean":
            div = divisor(opts.avg_factor, kept_count, dtype, opts.divisor, rows.num_valid)
            loss = kept_sum / div
        elif opts.reduction == "sum":
            loss = kept_sum
        else:
            loss = row_sum.reshape(target.shape)
        small = small_int_dtype(c)
        ctx.p, ctx.reduction, ctx.x_dtype, ctx.dtype = p, opts.reduction, x.dtype, dtype
        ctx.x_shape, ctx.x3_shape, ctx.backend, ctx.layout = x.shape, x3.shape, backend, layout
        raw, ctx.raw_sizes = kept_raw if kept_raw is not None else (None, None)
        ctx.save_for_backward(mask, rows.t.to(small), rows.row_weight, div, raw)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        mask, t, row_weight, div, raw = ctx.saved_tensors
        kept_raw = None if raw is None else (raw, ctx.raw_sizes)
        coef = backward_coef(
            grad_out.to(ctx.dtype), ctx.reduction, div, row_weight, ctx.x3_shape[0]
        )
        grad = ctx.backend.grad(
            mask, ctx.layout, ctx.x3_shape, t.long(), coef, kept_raw, ctx.x_dtype, ctx.dtype
        )
        return grad.reshape(ctx.x_shape), None, None, None, None, None
