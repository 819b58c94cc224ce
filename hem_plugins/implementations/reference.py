"""The reference implementation: the loss in a few whole-tensor torch ops, and its row layout.

:class:`Rows` lays the logits and targets out as ``(N, C, S)`` / ``(N, S)`` rows and
computes their errors; :class:`HEMFunction` is the loss on them with an analytic
backward. The multi-class margin loss, ``settled_mask`` / ``kept_mask`` and the
benchmark's HEM without threshold compute their errors with :class:`Rows` too.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .checks import check_rows
from .options import (
    LossOptions,
    backward_coef,
    compute_dtype,
    divisor,
    margin_table,
    num_positions,
    row_margin,
)


class Rows:
    """Logits and targets laid out as ``(N, C, S)`` / ``(N, S)`` (a view; no transpose).

    Holds the safe targets ``t`` (0 on invalid rows), the validity of each
    row, its weight ``(N, 1, S)`` (or None) and its margin, and the flags of
    the value checks (``bad_target``; ``posinf_target`` once :meth:`hinge` ran).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        margin: float | torch.Tensor,
        ignore_index: int,
        weight: torch.Tensor | None,
        class_weight: torch.Tensor | None,
    ) -> None:
        n, c = logits.shape[:2]
        s = num_positions(logits.shape)
        self.num_classes = c
        self.logits, self.target, self.ignore_index = logits, target, ignore_index
        x = logits.reshape(n, c, s)
        self.x = x.to(compute_dtype(x.dtype))
        t = target.reshape(n, s).long()
        valid = t != ignore_index
        in_range = (t >= 0) & (t < c)
        self.bad_target = (valid & ~in_range).any()
        valid &= in_range
        self.t = torch.where(valid, t, 0)
        # Per-row weight: the sampler's pixel weight times the class weight of the target.
        row_weight = None
        if weight is not None:
            row_weight = weight.reshape(n, s).to(self.x)
        if class_weight is not None:
            cw = class_weight.to(self.x)[self.t]
            row_weight = cw if row_weight is None else row_weight * cw
        if row_weight is not None:
            valid &= row_weight != 0
            row_weight = row_weight.unsqueeze(1)
        self.valid = valid
        self.row_weight = row_weight
        self.posinf_target = torch.zeros((), dtype=torch.bool, device=x.device)
        mu = row_margin(margin_table(margin, self.x.dtype, self.x.device), self.t)
        self.mu = mu if isinstance(mu, float) else mu.unsqueeze(1)

    def hinge(self) -> torch.Tensor:
        """``max(0, mu_j - x[j, t_j] + x[j, i])``, zero at the target and on invalid rows."""
        idx = self.t.unsqueeze(1)
        xt = self.x.gather(1, idx)
        self.posinf_target = (torch.isposinf(xt.detach()).squeeze(1) & self.valid).any()
        # e = x - (x_t - mu): one pass over the logits. Invalid rows get a shift so
        # large that all their errors clamp to 0.
        shift = (xt - self.mu).masked_fill(~self.valid.unsqueeze(1), torch.finfo(self.x.dtype).max)
        e = self.x - shift
        if torch.is_grad_enabled() and self.x.requires_grad:
            return e.clamp_min(0).scatter(1, idx, 0.0)
        return e.clamp_min_(0).scatter_(1, idx, 0.0)

    def weighted(self, e: torch.Tensor, p: int) -> torch.Tensor:
        """``e`` squared for ``p = 2``, times the row weights."""
        if p == 2:
            e = e * e
        if self.row_weight is not None:
            e = e * self.row_weight
        return e

    def num_entries(self, mask_value: float | None) -> torch.Tensor:
        """Entries of the valid rows that count in the threshold's mean."""
        if mask_value is None:
            return self.valid.sum() * self.num_classes
        active = (self.x != mask_value) & ~torch.isneginf(self.x)
        return (active & self.valid.unsqueeze(1)).sum()


class HEMFunction(torch.autograd.Function):
    """HEM forward on :class:`Rows` with an analytic backward that keeps the kept-entry mask.

    Between forward and backward it holds a bool ``(N, C, S)`` mask of ``K``,
    the targets, the row weights and the divisor (plus the kept errors for
    ``p = 2``); not the logits, unlike autograd through the elementwise ops.
    """

    @staticmethod
    def forward(ctx, x, rows, opts, inputs, target_shape):
        e_raw = rows.hinge()
        e = rows.weighted(e_raw, opts.p)
        total = e.sum()
        (ebar,) = check_rows(  # non-finite errors: entry.resolve_nonfinite
            rows,
            total,
            True,
            inputs,
            total / rows.num_entries(opts.mask_value).clamp_min(1),
        )
        # Keep the errors strictly above the threshold, zero the rest (in place:
        # e_raw is needed afterwards only when p == 2, and then e is another tensor).
        torch.nn.functional.threshold(e, ebar, 0.0, inplace=True)
        kept = e != 0  # kept errors exceed ebar >= 0
        div = None
        if opts.reduction == "mean":
            n_rows = None if opts.divisor[0] == "kept" else rows.valid.sum()
            div = divisor(opts.avg_factor, torch.count_nonzero(kept), x.dtype, opts.divisor, n_rows)
            loss = e.sum() / div
        elif opts.reduction == "sum":
            loss = e.sum()
        else:
            loss = e.sum(1).reshape(target_shape)

        ctx.p, ctx.reduction, ctx.dtype = opts.p, opts.reduction, x.dtype
        kept_raw = e_raw.masked_select(kept) if opts.p == 2 else None
        ctx.save_for_backward(kept, rows.t, rows.row_weight, div, kept_raw)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        kept, t, row_weight, div, kept_raw = ctx.saved_tensors
        coef = backward_coef(grad_out, ctx.reduction, div, row_weight, kept.shape[0])
        if ctx.p == 2:
            grad = torch.zeros(kept.shape, dtype=ctx.dtype, device=kept.device)
            grad.masked_scatter_(kept, 2.0 * kept_raw).mul_(coef)
        else:
            grad = torch.mul(kept, coef.to(ctx.dtype))
        # d e[j, i] / d x[j, t_j] = -d e[j, i] / d x[j, i]
        grad.scatter_(1, t.unsqueeze(1), -grad.sum(1, keepdim=True))
        return grad, None, None, None, None


def run(logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """:func:`hem_plugins.hem_loss` on the reference implementation (after the entry's checks)."""
    rows = Rows(logits, target, margin, opts.ignore_index, opts.weight, opts.class_weight)
    return HEMFunction.apply(rows.x, rows, opts, inputs, tuple(target.shape))
