"""What every implementation of the loss shares besides the checks.

One definition each of: the options a loss call carries, the dtype the math runs
in, how a row's margin is picked, the divisor of ``'mean'``, the coefficient the
backward multiplies the kept mask by, which rows are valid, and what a batch of no
rows and a call with non-finite errors return.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

EPS = torch.finfo(torch.float32).eps


class LossOptions(NamedTuple):
    """The keyword options of :func:`hem_plugins.hem_loss` (validated before they get here)."""

    ignore_index: int = -100
    reduction: str = "mean"
    p: int = 1
    weight: torch.Tensor | None = None
    class_weight: torch.Tensor | None = None
    avg_factor: float | torch.Tensor | None = None
    mask_value: float | None = None
    check_finite: bool = True
    divisor: tuple[str, float] = ("kept", 0.0)  # (kind, f) from checks.check_divisor


def takes_small_call(
    reduction: str, p: int, divisor: str, weight, class_weight, avg_factor
) -> bool:
    """Whether a call's options are those of the small-call operator: ``p = 1``, no
    weights, no ``avg_factor``, the ``|K|`` divisor (``"kept"``) and ``'mean'`` or
    ``'sum'``. The one statement of the rule, for :func:`~hem_plugins.hem_loss`, the
    modules and :func:`.cpu_kernel.run`; :func:`.entry.small_call` checks the tensors."""
    return (
        p == 1
        and weight is None
        and class_weight is None
        and avg_factor is None
        and divisor == "kept"
        and (reduction == "mean" or reduction == "sum")
    )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the errors are computed in: float32 for half precision (as cross-entropy
    under autocast), the logits' own dtype otherwise (float32, float64)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def num_positions(shape: torch.Size) -> int:
    """``S``: the number of positions of one sample (1 for ``(N, C)`` logits)."""
    return math.prod(shape[2:])


def margin_table(
    margin: float | torch.Tensor, dtype: torch.dtype, device: torch.device
) -> float | torch.Tensor:
    """The margin as the implementations read it: a float ``mu`` for every row (HEM), or
    the ``(C,)`` margins in ``dtype`` on ``device``, contiguous (HEM+: row ``j`` takes
    ``margin[t_j]``, :func:`row_margin`). No copy when the margins already are so."""
    if isinstance(margin, torch.Tensor) and margin.dim() == 1:
        if margin.dtype != dtype or margin.device != device or not margin.is_contiguous():
            margin = margin.to(device=device, dtype=dtype).contiguous()
        return margin
    return float(margin)


def row_margin(table: float | torch.Tensor, t: torch.Tensor) -> float | torch.Tensor:
    """``mu_j`` of the rows whose safe targets are ``t``: the one margin (HEM) or
    ``table[t]``, of ``t``'s shape (HEM+). ``table`` from :func:`margin_table`."""
    return table if isinstance(table, float) else table[t]


def divisor(
    avg_factor: float | torch.Tensor | None,
    count: torch.Tensor | float,
    dtype: torch.dtype,
    mode: tuple[str, float] = ("kept", 0.0),
    rows: torch.Tensor | float | None = None,
) -> torch.Tensor | float:
    """Divisor of ``'mean'``: ``avg_factor`` (at least float32 eps) when given, else by
    ``mode`` (``(kind, f)``, see ``docs/divisor.md``) ``|K|`` (``"kept"``, the paper's),
    ``|V|`` (``"rows"``) or ``max(|K|, f |V|)`` (``"floor"``), at least 1.

    ``count`` is ``|K|``, ``rows`` is ``|V|`` (needed for ``"rows"`` and ``"floor"``).
    A tensor on ``count``'s device (made with no host round trip:
    ``torch.full``, not a copy), or a Python float when ``count`` is one (the
    CPU kernel's glue, which has its sums as floats).
    """
    kind, f = mode
    if not isinstance(count, torch.Tensor):
        if avg_factor is not None:
            return max(float(avg_factor), EPS)
        if kind == "rows":
            count = float(rows)
        elif kind == "floor":
            count = max(count, f * float(rows))
        return max(count, 1.0)
    if avg_factor is None:
        if kind == "rows":
            count = rows
        elif kind == "floor":
            return torch.maximum(count.to(dtype), rows.to(dtype) * f).clamp_min(1)
        return count.clamp_min(1).to(dtype)
    if isinstance(avg_factor, torch.Tensor):
        avg_factor = avg_factor.detach().reshape(())  # a one-element tensor
        return avg_factor.to(device=count.device, dtype=dtype).clamp_min(EPS)
    return torch.full((), max(float(avg_factor), EPS), dtype=dtype, device=count.device)


def valid_mask(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The valid rows, a bool tensor of the target's shape: target in ``[0, C)``, not
    ``ignore_index``, and row weight (``weight * class_weight[t]``, in ``dtype``) not 0.

    One pass over the targets, not the logits: for the CPU kernel's glue where its pass
    does not give ``|V|`` (:func:`valid_rows`), and for the rare calls with non-finite
    values (``entry.resolve_nonfinite``).
    """
    t = target.long()
    valid = (t != ignore_index) & (t >= 0) & (t < num_classes)
    rw = None
    if weight is not None:
        rw = weight.to(dtype)
    if class_weight is not None:
        cw = class_weight.to(device=t.device, dtype=dtype)[torch.where(valid, t, 0)]
        rw = cw if rw is None else rw * cw
    if rw is not None:
        valid &= rw != 0
    return valid


def valid_rows(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``|V|`` as a 0-dim tensor: the number of rows of :func:`valid_mask` (``weight``, if
    any, holds as many entries as ``target``, in any shape)."""
    if weight is not None:
        weight = weight.reshape(target.shape)
    return valid_mask(target, num_classes, ignore_index, weight, class_weight, dtype).sum()


def backward_coef(
    grad_out: torch.Tensor | float,
    reduction: str,
    divisor: torch.Tensor | float | None,
    row_weight: torch.Tensor | None,
    n: int,
) -> torch.Tensor | float:
    """``d loss / d e`` of each kept entry: a scalar, or ``(N, 1, S)`` per row.

    ``'mean'``: ``grad_out / divisor``; ``'sum'``: ``grad_out``; ``'none'``: the
    row's ``grad_out``. Times the row weight ``(N, 1, S)`` when there is one.
    Python floats in, a Python float out (the CPU kernel's scalar case).
    """
    if reduction == "mean":
        coef = grad_out / divisor
    elif reduction == "sum":
        coef = grad_out
    else:
        coef = grad_out.reshape(n, 1, -1)
    if row_weight is not None:
        coef = coef * row_weight
    return coef


def empty_result(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """What a batch of no rows returns, as an all-ignored batch does: a zero in the graph
    (``'mean'``, ``'sum'``), an empty tensor of the target's shape (``'none'``)."""
    per_row = logits.to(compute_dtype(logits.dtype)).sum(1) * 0.0
    return per_row if reduction == "none" else per_row.sum()


def nan_result(logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """What a call whose valid rows have non-finite errors returns with ``check_finite=False``:
    NaN (every entry for ``'none'``), in the graph so that every logit's gradient is NaN
    too (``docs/design.md``, section 3)."""
    per_row = logits.to(compute_dtype(logits.dtype)).sum(1) * math.nan
    return per_row if reduction == "none" else per_row.sum()
