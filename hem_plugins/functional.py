r"""Functional HEM / HEM+ loss and the multi-class margin baseline.

The definition of the math that every implementation computes
(:mod:`hem_plugins.implementations`) and every adapter of this package uses
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

from .implementations.entry import (
    DIVISOR_FLOOR,
    LossOptions,
    as_class_weight,
    check_call,
    check_divisor,
    hem,
    mm,
    small_call,
    takes_small_call,
    value_inputs,
)

__all__ = ["DIVISOR_FLOOR", "hem_loss", "mm_loss"]


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

    One of four implementations runs it, chosen per call by
    :func:`hem_plugins.implementations.choose` (the C++ kernel for most CPU
    calls, Triton kernels on CUDA, chunked torch ops or the reference torch ops
    otherwise; ``docs/performance.md``) unless the switch
    :func:`hem_plugins.implementations.use` names one; all give the same values
    and gradients. Between forward and backward it keeps the kept set as a mask
    (bit-packed on the CPU, a byte per entry on CUDA and in the reference
    implementation), never the logits. An empty batch (no rows) returns what an
    all-ignored batch returns.

    Rows that take no part (target ``ignore_index``, or weight 0) are never
    used: their logits may hold anything, NaN and infinities included, and
    are not checked, as in cross-entropy's ``ignore_index``; their gradient is
    0. Non-finite errors of the other rows (NaN or +inf logits, a +-inf target
    logit, logits so large that their difference overflows) raise a
    ``ValueError`` that names the cause; with ``check_finite=False`` they make
    the loss NaN instead (every entry for ``'none'``, and every entry of the
    gradient), on every implementation (``docs/design.md``, section 3).

    Choices of this project where the paper is silent: the threshold averages
    over all ``C`` entries (as multi-class margin loss does), a kept error must
    be strictly greater than it, HEM+ takes the margin of the row's *target*
    class, and an empty ``K`` (or an all-ignored batch) gives a zero loss that
    still belongs to the graph (zero gradients, never NaN).

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, d2, ...)``, ``C >= 1``; float64,
            float32, float16 or bfloat16 (the last two computed in float32), any
            device, contiguous or not.
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
        class_weight: ``(C,)`` weights (a tensor, or a list or tuple of
            numbers), the row's target class picks one; a row whose class
            weight is 0 is not valid either.
        avg_factor: with ``'mean'``, the divisor instead of ``|K|`` (mmseg);
            it takes precedence over ``divisor``. A finite number ``>= 0`` or a
            one-element tensor: mmseg passes the number of valid elements,
            and 0 (an empty batch) or anything below float32 eps divides by
            eps, so that the loss of an empty batch is 0.
        mask_value: logits equal to this value, or to ``-inf``, are masked
            units (e.g. Avalanche's ``IncrementalClassifier`` fills units of
            unseen classes with -1000): they are left out of the threshold's
            mean, so the loss equals the loss on the active units alone. Masked
            units have zero error whether or not this is set.
        check_finite: raise on non-finite errors of the valid rows (see
            above), and on non-finite or negative values of tensor margins,
            weights and ``avg_factor`` (one host synchronisation per call,
            shared with the target range check). False gives NaN for
            non-finite errors instead; on CUDA the call then makes no host
            synchronisation at all (a target outside ``[0, C)`` fails a
            device-side assertion, as in cross-entropy) and the values are not
            looked at: the NaN rule and the rule of ignored rows hold where
            the call synchronises (``docs/design.md``, section 3).
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
    if takes_small_call(
        reduction, p, divisor, weight, class_weight, avg_factor
    ):  # the common small call: the C++ operator checks it (entry.small_call), or None
        loss = small_call(logits, target, margin, ignore_index, mask_value, reduction == "sum")
        if loss is not None:
            return loss
    if class_weight is not None and not isinstance(class_weight, torch.Tensor):
        class_weight = as_class_weight(class_weight, logits)  # a list or tuple
    check_call(
        logits,
        target,
        margin,
        reduction=reduction,
        p=p,
        weight=weight,
        class_weight=class_weight,
        avg_factor=avg_factor,
    )
    opts = LossOptions(
        ignore_index=ignore_index,
        reduction=reduction,
        p=p,
        weight=weight,
        class_weight=class_weight,
        avg_factor=avg_factor,
        mask_value=mask_value,
        check_finite=check_finite,
        divisor=check_divisor(divisor),
    )
    inputs = value_inputs(logits, check_finite, margin, weight, class_weight, avg_factor)
    return hem(logits, target, margin, opts, inputs)


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
    Ignored rows and non-finite values follow the rules of :func:`hem_loss`.

    Example:
        >>> import torch
        >>> x, t = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> torch.allclose(mm_loss(x, t), torch.nn.functional.multi_margin_loss(x, t))
        True
    """
    if class_weight is not None and not isinstance(class_weight, torch.Tensor):
        class_weight = as_class_weight(class_weight, logits)  # a list or tuple
    check_call(
        logits,
        target,
        margin,
        reduction=reduction,
        p=p,
        weight=weight,
        class_weight=class_weight,
        avg_factor=avg_factor,
    )
    opts = LossOptions(
        ignore_index=ignore_index,
        reduction=reduction,
        p=p,
        weight=weight,
        class_weight=class_weight,
        avg_factor=avg_factor,
        check_finite=check_finite,
    )
    inputs = value_inputs(logits, check_finite, margin, weight, class_weight, avg_factor)
    return mm(logits, target, margin, opts, inputs)
