r"""Which rows HEM has *settled*: every error of the row is zero.

A row ``j`` is settled when its target logit beats every other logit by at
least its margin, i.e. every error of ``docs/design.md`` section 1 is zero:

.. math::

    e_{j,i} = \max(0,\ \mu_j - x_{j,t_j} + x_{j,i}) = 0 \quad \forall i \ne t_j

Such a row gives exactly zero loss and zero gradient to HEM, HEM+ and the
multi-class margin loss, whatever the rest of the batch (its errors can never
exceed the threshold ``ebar >= 0``). Skipping it changes nothing but the
threshold and the divisor of the other rows' loss (both computed over the rows
presented), which is what :mod:`hem_plugins.skipping` measures.
"""

from __future__ import annotations

import torch

from .implementations.entry import Rows, check_call, check_rows, errors, input_value_flags

__all__ = ["kept_mask", "settled_mask"]


@torch.no_grad()
def settled_mask(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    ignore_index: int = -100,
) -> torch.Tensor:
    r"""Bool per row: True where every HEM error of the row is zero.

    The errors are those of :func:`hem_plugins.hem_loss` (computed by the same
    code): ``e[j, i] = max(0, mu_j - x[j, t_j] + x[j, i])`` for ``i != t_j``,
    with ``mu_j = margin`` (HEM) or ``margin[t_j]`` (HEM+). A settled row has
    ``x[j, t_j] - x[j, i] >= mu_j`` for every other class ``i``; equality counts
    as settled (its error is exactly 0). Its loss with
    ``hem_loss(..., reduction='none')`` and ``mm_loss(..., reduction='none')`` is
    0, and so is its gradient.

    Ignored rows (target equal to ``ignore_index``) are **not** settled: the
    mask is False there, as the core counts them as no row at all. To ask
    whether a whole segmentation image is settled, treat its ignored pixels as
    settled: ``(settled_mask(x, t, mu) | (t == ignore_index)).flatten(1).all(1)``.
    A row with a NaN logit is not settled. Units masked with a large negative
    value (Avalanche's -1000) have zero error and do not stop a row being settled.

    Runs under ``torch.no_grad`` on the logits' device (CPU or CUDA), one pass
    over the logits and one host synchronisation (the target range check).

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)`` floating-point logits.
        target: ``(N,)`` or ``(N, d1, ...)`` integer targets in ``[0, C)`` or
            ``ignore_index``.
        margin: a float or 0-dim tensor (HEM) or a ``(C,)`` tensor (HEM+), as
            given to :func:`~hem_plugins.hem_loss` (``criterion.margins`` of
            :class:`~hem_plugins.HEMLoss` / :class:`~hem_plugins.HEMPlusLoss`).
        ignore_index: target value of rows that take no part.

    Returns:
        A bool tensor of the target's shape, on the logits' device.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 2.0, 0.0]])
        >>> settled_mask(logits, torch.tensor([0, 0, -100]), margin=1.0)
        tensor([ True, False, False])
        >>> settled_mask(logits, torch.tensor([0, 0, 1]), margin=torch.tensor([0.5, 2.0, 1.0]))
        tensor([True, True, True])
    """
    if target.numel() == 0:
        check_call(logits, target)
        return torch.zeros(target.shape, dtype=torch.bool, device=logits.device)
    rows, e = _checked_errors(logits, target, margin, ignore_index)
    settled = (e == 0).all(dim=1) & rows.valid
    return settled.reshape(target.shape)


def _checked_errors(logits, target, margin, ignore_index) -> tuple[Rows, torch.Tensor]:
    """The core's rows and errors ``(N, C, S)`` (zero at the target and on invalid rows),
    after the checks: a target outside ``[0, C)`` or a bad tensor margin raises; the logits'
    values are not checked."""
    check_call(logits, target, margin)
    rows, e = errors(logits.detach(), target, margin, ignore_index)
    check_rows(rows, None, False, input_value_flags(margin, None, None))
    return rows, e


@torch.no_grad()
def kept_mask(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    threshold: bool = True,
    ignore_index: int = -100,
) -> torch.Tensor:
    r"""Bool per entry ``(j, i)``: True where the loss averages this error.

    With ``threshold`` (HEM, HEM+): the set ``K = {e[j, i] > ebar}`` of
    :func:`hem_plugins.hem_loss`, whose mean is the loss. Without (multi-class
    margin loss, HEM without its threshold): the non-zero errors. The errors are
    computed by the core's code, as in :func:`settled_mask`; ``|K| / (|V| C)`` (the
    *kept fraction*) shows how much of the batch still drives a HEM step.

    Returns:
        A bool tensor of the logits' shape; False on ignored rows.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, 0.0, 1.0], [1.0, 0.5, 0.0]])
        >>> kept_mask(logits, torch.tensor([0, 0]), margin=1.0)
        tensor([[False, False, False],
                [False,  True, False]])
    """
    if target.numel() == 0:
        check_call(logits, target)
        return torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    rows, e = _checked_errors(logits, target, margin, ignore_index)
    if threshold:  # ebar as the core computes it (no masked units)
        kept = e > e.sum() / rows.num_entries(None).clamp_min(1)
    else:
        kept = e > 0
    return kept.reshape(logits.shape)
