"""Fast path of :func:`hem_plugins.hem_loss`: two passes over the logits, a one-byte mask saved.

Same math as the reference path in ``functional.py`` (DESIGN.md section 2),
laid out as ``(N, C, S)`` with no transpose. The forward makes two passes
over the logits, each in chunks of about ``CHUNK_ELEMS`` entries so that its
temporaries stay in the CPU cache:

1. the errors ``e`` (target entry 0, ``p``, row weights) and their sum,
   which gives the threshold ``ebar`` (one host synchronisation, shared with
   the target and finiteness checks);
2. the same errors again, compared with ``ebar``: the kept mask ``K``
   (written into one ``bool`` tensor), the sum of the kept errors, and the
   number of kept entries of each row.

Between forward and backward it keeps the mask (1 byte per entry), the
targets and the per-row counts in the narrowest integer type that holds
them, the row weights if any and, for ``p = 2`` only, the kept errors; not
the logits. The backward writes the gradient in one pass over the mask. On
CUDA the same three steps run as Triton kernels (``_triton_kernel.py``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

CHUNK_ELEMS = 1 << 18
"""Logits per chunk on the CPU: 1 MiB of float32, so a chunk and its temporaries stay in L2."""


def small_int_dtype(limit: int) -> torch.dtype:
    """Narrowest integer dtype that holds ``0 .. limit``."""
    if limit <= 255:
        return torch.uint8
    if limit <= 32767:
        return torch.int16
    return torch.int32


def chunks(n: int, c: int, s: int, elems: int = CHUNK_ELEMS) -> list[tuple[slice, slice]]:
    """``(n-slice, s-slice)`` pairs covering ``(N, S)``, about ``elems`` logits each."""
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
    to 0. The shift is filled in by the first pass (the gather of the target
    logits is fastest chunk by chunk, while the chunk is in cache).
    """

    def __init__(self, x3, target, margin, ignore_index, weight, class_weight, compute_dtype):
        n, c, s = x3.shape
        self.logits, self.target, self.ignore_index, self.num_classes = x3, target, ignore_index, c
        t = target.reshape(n, 1, s)
        valid = t != ignore_index
        in_range = (t >= 0) & (t < c)
        self.bad_target = (valid & ~in_range).any()
        valid &= in_range
        self.t = torch.where(valid, t, 0)
        if self.t.dtype != torch.long:
            self.t = self.t.long()
        row_weight = None
        if weight is not None:
            row_weight = weight.reshape(n, 1, s).to(compute_dtype)
        if class_weight is not None:
            cw = class_weight.to(device=x3.device, dtype=compute_dtype)[self.t]
            row_weight = cw if row_weight is None else row_weight * cw
        if row_weight is not None:
            valid &= row_weight != 0
        self.valid, self.row_weight = valid, row_weight
        self.invalid = ~valid
        if isinstance(margin, torch.Tensor) and margin.dim() == 1:
            self.mu = margin.to(device=x3.device, dtype=compute_dtype)[self.t]
        else:
            self.mu = float(margin)
        self.shift = torch.empty((n, 1, s), dtype=compute_dtype, device=x3.device)
        self.posinf_target = None  # set by the first pass

    def chunk(self, bn, bs):
        """(targets, shift view, row weights or None) of one chunk."""
        rw = None if self.row_weight is None else self.row_weight[bn, :, bs]
        return self.t[bn, :, bs], self.shift[bn, :, bs], rw

    def fill_shift(self, xc, bn, bs):
        tc, sh, _ = self.chunk(bn, bs)
        mu = self.mu if isinstance(self.mu, float) else self.mu[bn, :, bs]
        torch.sub(xc.gather(1, tc), mu, out=sh)
        sh.masked_fill_(self.invalid[bn, :, bs], torch.finfo(sh.dtype).max)

    def finish_shift(self):
        # A +inf target logit (valid row) makes the shift +inf; invalid rows hold the finite max.
        self.posinf_target = torch.isposinf(self.shift).any()


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
        totals, counts = [], []
        for bn, bs in chunks(n, c, s):
            xc = x3[bn, :, bs]
            if xc.dtype != dtype:
                xc = xc.to(dtype)
            rows.fill_shift(xc, bn, bs)
            tc, sh, rw = rows.chunk(bn, bs)
            totals.append(chunk_errors(xc, sh, tc, p, rw).sum())
            if mask_value is not None:
                active = (xc != mask_value) & (xc != float("-inf")) & rows.valid[bn, :, bs]
                counts.append(active.sum())
        rows.finish_shift()
        total = torch.stack(totals).sum()
        if mask_value is None:
            count = rows.valid.sum() * c
        else:
            count = torch.stack(counts).sum()
        return total, count

    @staticmethod
    def kept(x3, rows, p, ebar, dtype, want_row_sums):
        """Mask of ``e > ebar``, kept sum, kept count, kept sum per row, kept raw errors (p=2)."""
        n, c, s = x3.shape
        mask = torch.empty(x3.shape, dtype=torch.bool, device=x3.device)
        row_sum = torch.empty((n, 1, s), dtype=dtype, device=x3.device) if want_row_sums else None
        sums, counts, kept_raw = [], [], []
        for bn, bs in chunks(n, c, s):
            xc = x3[bn, :, bs]
            if xc.dtype != dtype:
                xc = xc.to(dtype)
            tc, sh, rw = rows.chunk(bn, bs)
            if p == 1 and rw is None:
                # threshold(e, ebar) zeroes e <= ebar (negative and -inf included): no clamp needed.
                e = torch.sub(xc, sh).scatter_(1, tc, 0.0)
            else:
                e = chunk_errors(xc, sh, tc, p, rw)
            torch.nn.functional.threshold_(e, ebar, 0.0)
            mc = mask[bn, :, bs]
            mc.copy_(e)  # kept errors are > ebar >= 0: nonzero exactly on K
            if p == 2:  # the backward needs the raw (unsquared, unweighted) kept errors
                kept_raw.append((xc - sh).masked_select(mc))
            sums.append(e.sum())
            counts.append(mc.view(torch.uint8).sum())
            if row_sum is not None:
                torch.sum(e, 1, keepdim=True, out=row_sum[bn, :, bs])
        kept_raw = torch.cat(kept_raw) if p == 2 else None
        return mask, torch.stack(sums).sum(), torch.stack(counts).sum(), row_sum, kept_raw

    @staticmethod
    def grad(mask, t, coef, kept_raw, x_dtype, dtype):
        """Gradient w.r.t. the ``(N, C, S)`` logits: ``coef`` on kept entries, minus their sum at the target."""
        if kept_raw is not None:
            grad = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
            grad.masked_scatter_(mask, 2.0 * kept_raw).mul_(coef)
            grad.scatter_(1, t, grad.sum(1, keepdim=True).neg_())
            return grad if grad.dtype == x_dtype else grad.to(x_dtype)
        n, c, s = mask.shape
        grad = torch.empty(mask.shape, dtype=x_dtype, device=mask.device)
        m8 = mask.view(torch.uint8)  # uint8 -> float converts much faster than bool -> float
        per_row = coef.dim() > 0
        for bn, bs in chunks(n, c, s):
            gc = grad[bn, :, bs]
            g = gc if x_dtype == dtype else torch.empty(gc.shape, dtype=dtype, device=gc.device)
            g.copy_(m8[bn, :, bs]).mul_(coef[bn, :, bs] if per_row else coef)
            g.scatter_(1, t[bn, :, bs], g.sum(1, keepdim=True).neg_())
            if g is not gc:
                gc.copy_(g)
        return grad


def backend_for(x: torch.Tensor):
    if x.is_cuda:
        from . import _triton_kernel

        if _triton_kernel.available():
            return _triton_kernel.TritonBackend
    return TorchBackend


class HEMFastFunction(torch.autograd.Function):
    """Forward in two passes; backward from the saved mask and per-row counts."""

    @staticmethod
    def forward(ctx, x, target, margin, opts):
        (
            ignore_index,
            reduction,
            p,
            weight,
            class_weight,
            avg_factor,
            mask_value,
            check_finite,
            check,
        ) = opts
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        backend = backend_for(x)
        rows = RowData(x3, target, margin, ignore_index, weight, class_weight, dtype)
        total, count = backend.error_sum(x3, rows, p, mask_value, dtype)
        (ebar,) = check(rows, total, check_finite, total / count.clamp_min(1))
        mask, kept_sum, kept_count, row_sum, kept_raw = backend.kept(
            x3, rows, p, ebar, dtype, reduction == "none"
        )
        if reduction == "mean":
            if avg_factor is None:
                divisor = kept_count.clamp_min(1).to(dtype)
            else:
                divisor = torch.as_tensor(avg_factor, dtype=dtype, device=x.device).clamp_min(
                    torch.finfo(torch.float32).eps
                )
            loss = kept_sum / divisor
        elif reduction == "sum":
            divisor, loss = None, kept_sum
        else:
            divisor, loss = None, row_sum.reshape(target.shape)
        small = small_int_dtype(c)
        ctx.p, ctx.reduction, ctx.x_dtype, ctx.dtype = p, reduction, x.dtype, dtype
        ctx.x_shape, ctx.backend = x.shape, backend
        ctx.save_for_backward(mask, rows.t.to(small), rows.row_weight, divisor, kept_raw)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        mask, t, row_weight, divisor, kept_raw = ctx.saved_tensors
        grad_out = grad_out.to(ctx.dtype)
        if ctx.reduction == "mean":
            coef = grad_out / divisor
        elif ctx.reduction == "sum":
            coef = grad_out
        else:
            coef = grad_out.reshape(mask.shape[0], 1, -1)
        if row_weight is not None:
            coef = coef * row_weight
        grad = ctx.backend.grad(mask, t.long(), coef, kept_raw, ctx.x_dtype, ctx.dtype)
        return grad.reshape(ctx.x_shape), None, None, None
