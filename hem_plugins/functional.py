r"""Functional HEM / HEM+ loss and the multi-class margin baseline.

The single definition of the math used by every adapter of this package
(``docs/design.md``, section 1; the choices where the paper is silent: section 3;
the divisor options: ``docs/divisor.md``). Every position of the input (a sample, or a pixel of a
segmentation map) is one *row* ``j`` with a logit vector ``x_j`` of ``C``
entries and a target ``t_j``.

.. math::

    e_{j,i} = \max(0,\ \mu_j - x_{j,t_j} + x_{j,i}) \quad (i \ne t_j), \qquad e_{j,t_j} = 0

    \bar e = \frac{\sum_{j \in V} \sum_i e_{j,i}}{|V| \cdot C}, \qquad
    K = \{(j, i) : e_{j,i} > \bar e\}, \qquad
    L = \frac{1}{D} \sum_{(j,i) \in K} e_{j,i}

``mu_j`` is the margin (HEM) or the margin of the row's target class (HEM+).
``V`` holds the valid rows (target not ``ignore_index``, weight not 0). The
divisor ``D`` is ``|K|`` (the paper's, the default), ``|V|`` or ``max(|K|, f |V|)``
(``divisor=``; ``docs/divisor.md``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _cpu_kernel, _fast
from ._checks import (
    DIVISOR_FLOOR,
    check_divisor,
    check_logits_target,
    check_margin,
    check_options,
    check_weights,
)
from ._common import (
    LossOptions,
    backward_coef,
    check_rows,
    compute_dtype,
    divisor,
    empty_result,
    num_positions,
    value_inputs,
)

__all__ = ["DIVISOR_FLOOR", "hem_loss", "mm_loss"]


class _Rows:
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
        if isinstance(margin, torch.Tensor) and margin.dim() == 1:
            self.mu = margin.to(self.x)[self.t].unsqueeze(1)  # HEM+: the target class's margin
        else:
            self.mu = float(margin)

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


def _validate(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    reduction: str,
    p: int,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    avg_factor: float | torch.Tensor | None,
) -> None:
    """Types, shapes and options (no synchronisation); values are checked inside the loss."""
    check_options(reduction, p)
    check_logits_target(logits, target)
    check_margin(margin, logits.shape[1])
    check_weights(weight, class_weight, target, logits.shape[1])
    if avg_factor is not None and reduction == "sum":
        raise ValueError('avg_factor can only be used with reduction="mean" (or "none")')


class _HEMFunction(torch.autograd.Function):
    """The reference path: HEM forward with an analytic backward that keeps the kept-entry mask.

    Between forward and backward it holds a bool ``(N, C, S)`` mask of ``K``,
    the targets, the row weights and the divisor (plus the kept errors for
    ``p = 2``); not the logits, unlike autograd through the elementwise ops.
    """

    @staticmethod
    def forward(ctx, x, rows, opts, inputs, target_shape):
        e_raw = rows.hinge()
        e = rows.weighted(e_raw, opts.p)
        total = e.sum()
        (ebar,) = check_rows(
            rows,
            total,
            opts.check_finite,
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


FAST_PATH: bool | str = "auto"
"""Which implementation ``hem_loss`` runs.

``"auto"`` (default) and True: on the CPU, the compiled kernel of
``_cpu_kernel.py`` where it applies (``p = 1``; float32, float64, bfloat16
logits; built). Otherwise ``"auto"`` takes the chunked torch ops or Triton
kernels of ``_fast.py`` for CUDA tensors and for CPU logits with spatial
dimensions, the reference path below for ``(N, C)`` CPU logits; True always
takes ``_fast.py``. False: the reference path (kept for comparison and as
the fallback)."""


def _hem(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
    inputs: list,
) -> torch.Tensor:
    """:func:`hem_loss` after validation; ``inputs``: the value flags of tensor margins/weights."""
    if target.numel() == 0:
        return empty_result(logits, target, opts.reduction)
    if FAST_PATH is not False and _cpu_kernel.handles(logits, opts):
        return _cpu_kernel.HEMKernelFunction.apply(logits, target, margin, opts, inputs)
    if _fast.runs_fast(logits, opts, FAST_PATH):
        return _fast.HEMFastFunction.apply(logits, target, margin, opts, inputs)
    rows = _Rows(logits, target, margin, opts.ignore_index, opts.weight, opts.class_weight)
    return _HEMFunction.apply(rows.x, rows, opts, inputs, tuple(target.shape))


def hem_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    p: int = 1,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
    mask_value: float | None = None,
    check_finite: bool = True,
    divisor: str | tuple[str, float] = "kept",
) -> torch.Tensor:
    r"""High-error-margin (HEM) loss; HEM+ when ``margin`` holds one margin per class.

    For every valid row ``j`` and class ``i`` the error is
    ``e[j, i] = max(0, mu_j - x[j, t_j] + x[j, i])`` for ``i != t_j`` and 0 at
    the target (``p=2`` squares it); the row weight ``weight[j] *
    class_weight[t_j]`` multiplies it. The threshold is the mean error over
    all ``C`` entries of every valid row, target entry included,
    ``ebar = sum(e) / (|V| * C)``, detached from the graph. Only the errors
    strictly above it are kept (``K``), and the loss is their mean.

    It runs the fast path of ``_fast.py`` where one applies (the compiled CPU
    kernel, chunked torch ops, or Triton kernels on CUDA; see
    ``functional.FAST_PATH``) and the reference implementation of this file
    otherwise; both give the same values and gradients. Between forward and
    backward it keeps the kept set as a mask (bit-packed on the CPU, a byte per
    entry on CUDA and in the reference path), never the logits. An empty
    batch (no rows) returns what an all-ignored batch returns.

    Choices of this project where the paper is silent: the threshold averages
    over all ``C`` entries (as multi-class margin loss does), a kept error must
    be strictly greater than it, HEM+ takes the margin of the row's *target*
    class, and an empty ``K`` (or an all-ignored batch) gives a zero loss that
    still belongs to the graph (zero gradients, never NaN).

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, d2, ...)``; float32, float16 or
            bfloat16 (computed in float32), any device, contiguous or not.
        target: ``(N,)`` or ``(N, d1, d2, ...)`` integer class indices in
            ``[0, C)`` or ``ignore_index``.
        margin: a float ``mu`` (HEM) or a ``(C,)`` tensor of per-class
            margins (HEM+, row ``j`` uses ``margin[t_j]``); non-negative, finite.
        ignore_index: target value of rows that take no part.
        reduction: ``'mean'`` (``sum_K e / |K|``), ``'sum'`` (``sum_K e``) or
            ``'none'`` (per row ``sum_i e[j, i] [(j, i) in K]``, shape of
            ``target``, 0 on invalid rows, so its sum equals ``'sum'``).
        p: 1, or 2 to square each error.
        weight: per-row weights of the target's shape (e.g. mmseg's pixel
            sampler); a row of weight 0 is not valid.
        class_weight: ``(C,)`` weights, the row's target class picks one; a
            row whose class weight is 0 is not valid either.
        avg_factor: with ``'mean'``, the divisor instead of ``|K|`` (mmseg); it
            takes precedence over ``divisor``.
        mask_value: logits equal to this value, or to ``-inf``, are masked
            units (e.g. Avalanche's ``IncrementalClassifier`` fills units of
            unseen classes with -1000): they are left out of the threshold's
            mean, so the loss equals the loss on the active units alone. Masked
            units have zero error whether or not this is set.
        check_finite: raise on NaN or +inf logits, on a valid row whose
            target logit is -inf, and on non-finite or negative values of tensor
            margins and weights (one host synchronisation per call, shared with
            the target range check). False skips these checks; on CUDA the call
            then makes no host synchronisation at all (a target outside
            ``[0, C)`` fails a device-side assertion, as in cross-entropy).
        divisor: what ``'mean'`` divides the kept sum by (``docs/divisor.md``):
            ``"kept"`` ``|K|``, the paper's (default); ``"rows"`` ``|V|``, the
            number of valid rows (pixels); ``"floor"`` ``max(|K|, f |V|)`` with
            ``f =`` :data:`DIVISOR_FLOOR`, or ``("floor", f)`` for another
            ``f > 0``. Always at least 1. ``'sum'`` and ``'none'`` ignore it,
            and so does ``'mean'`` when ``avg_factor`` is given.

    Returns:
        A scalar (``'mean'``, ``'sum'``) or a tensor of the target's shape
        (``'none'``); float32 for float16/bfloat16/float32 logits, float64 for float64.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 1.5], [0.1, 0.3, 0.2]], requires_grad=True)
        >>> target = torch.tensor([0, 1])
        >>> loss = hem_loss(logits, target, margin=1.0)
        >>> round(loss.item(), 4)  # errors 0.5, 0.8, 0.9 exceed their mean over 6 entries, 0.3667
        0.7333
        >>> loss.backward()
        >>> logits.grad
        tensor([[-0.3333,  0.0000,  0.3333],
                [ 0.3333, -0.6667,  0.3333]])
    """
    _validate(logits, target, margin, reduction, p, weight, class_weight, avg_factor)
    opts = LossOptions(
        ignore_index,
        reduction,
        p,
        weight,
        class_weight,
        avg_factor,
        mask_value,
        check_finite,
        check_divisor(divisor),
    )
    inputs = value_inputs(logits, check_finite, margin, weight, class_weight)
    return _hem(logits, target, margin, opts, inputs)


def mm_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor = 1.0,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    p: int = 1,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Multi-class margin (MM) loss, the paper's ablation baseline.

    The same errors as :func:`hem_loss` with no threshold: each valid row's
    loss is ``sum_i e[j, i] / C`` and ``'mean'`` averages it over the valid
    rows (``|V|``, or ``avg_factor``). On ``(N, C)`` input this equals
    :func:`torch.nn.functional.multi_margin_loss` (whose ``weight`` is
    ``class_weight`` here), with ``ignore_index`` and spatial dimensions added.

    Example:
        >>> import torch
        >>> x, t = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> torch.allclose(mm_loss(x, t), torch.nn.functional.multi_margin_loss(x, t))
        True
    """
    _validate(logits, target, margin, reduction, p, weight, class_weight, avg_factor)
    if target.numel() == 0:
        return empty_result(logits, target, reduction)
    rows = _Rows(logits, target, margin, ignore_index, weight, class_weight)
    per_row = rows.weighted(rows.hinge(), p).sum(1) / rows.num_classes
    inputs = value_inputs(logits, check_finite, margin, weight, class_weight)
    check_rows(rows, per_row.detach().sum(), check_finite, inputs)
    if reduction == "none":
        return per_row.reshape(target.shape)
    if reduction == "sum":
        return per_row.sum()
    return per_row.sum() / divisor(avg_factor, rows.valid.sum(), per_row.dtype)
