"""Glue shared by the reference path (``functional.py``) and the fast path (``_fast.py``).

One definition each of: the options a loss call carries, the dtype the math
runs in, the divisor of ``'mean'``, the coefficient the backward multiplies
the kept mask by, the one host synchronisation that fetches the value checks,
and what an empty batch returns.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import input_value_flags, raise_for_values

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
    divisor: tuple[str, float] = ("kept", 0.0)  # (kind, f) from _checks.check_divisor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the errors are computed in: float32 for half precision (as cross-entropy
    under autocast), the logits' own dtype otherwise (float32, float64)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def num_positions(shape: torch.Size) -> int:
    """``S``: the number of positions of one sample (1 for ``(N, C)`` logits)."""
    return math.prod(shape[2:])


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
        return avg_factor.detach().to(device=count.device, dtype=dtype).clamp_min(EPS)
    return torch.full((), max(float(avg_factor), EPS), dtype=dtype, device=count.device)


def valid_rows(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``|V|`` as a 0-dim tensor: rows whose target is in ``[0, C)``, not ``ignore_index``,
    and whose row weight (``weight * class_weight[t]``, in ``dtype``) is not 0.

    For the CPU kernel's glue where its pass does not give ``|V|`` (``mask_value`` set);
    one pass over the targets, not the logits.
    """
    t = target.reshape(-1).long()
    valid = (t != ignore_index) & (t >= 0) & (t < num_classes)
    rw = None
    if weight is not None:
        rw = weight.reshape(-1).to(dtype)
    if class_weight is not None:
        cw = class_weight.to(device=t.device, dtype=dtype)[torch.where(valid, t, 0)]
        rw = cw if rw is None else rw * cw
    if rw is not None:
        valid &= rw != 0
    return valid.sum()


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


def check_rows(
    rows,
    total: torch.Tensor | None,
    check_finite: bool,
    inputs: list[tuple[torch.Tensor, str, torch.Tensor]],
    *extra: torch.Tensor,
) -> list[float]:
    """Run the value checks of one call; fetch them and ``extra`` in one synchronisation.

    The checks: a target outside ``[0, C)`` and the ``inputs`` flags of tensor
    margins and weights (:func:`~hem_plugins._checks.input_value_flags`;
    callers pass none on CUDA with ``check_finite=False``, see
    :func:`value_inputs`); with ``check_finite``, a sum of errors ``total``
    that is not finite (a NaN or +inf logit, or a valid row whose target
    logit is -inf) and a +inf target logit (its errors clamp to 0, so
    ``total`` does not show it).
    ``rows`` (the reference ``_Rows`` or the fast ``RowData``) has the
    ``bad_target`` and ``posinf_target`` flags and the inputs the messages
    quote. Raises the error that names the first problem; returns the
    ``extra`` scalars as floats.
    """
    flags = [rows.bad_target]
    if check_finite:
        nonfinite = rows.posinf_target
        if total is not None:
            nonfinite = ~torch.isfinite(total) | nonfinite
        flags.append(nonfinite)
    flags += [f for f, _, _ in inputs]
    values = torch.stack([f.double() for f in (*flags, *extra)]).tolist()
    n_flags = len(flags)
    bools = [bool(v) for v in values[:n_flags]]
    if not check_finite:
        bools.insert(1, False)
    raise_for_values(
        bools,
        rows.logits,
        rows.target,
        rows.ignore_index,
        rows.num_classes,
        [(name, v) for _, name, v in inputs],
    )
    return values[n_flags:]


def value_inputs(logits, check_finite, margin, weight, class_weight) -> list:
    """The value flags of tensor margins and weights (``input_value_flags``), checked on
    every CPU call and on CUDA calls with ``check_finite`` (the one synchronisation);
    none on CUDA with ``check_finite=False``, which synchronises not at all."""
    if not check_finite and logits.is_cuda:
        return []
    return input_value_flags(margin, weight, class_weight)


def assert_targets_async(rows) -> None:
    """The target range check with no synchronisation (CUDA, ``check_finite=False``).

    A target outside ``[0, C)`` fails a device-side assertion, as in
    ``torch.nn.functional.cross_entropy`` on CUDA.
    """
    torch._assert_async(
        ~rows.bad_target, "hem_loss: a target is outside [0, C) and not ignore_index"
    )


def empty_result(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """What a batch of no rows returns, as an all-ignored batch does: a zero in the graph
    (``'mean'``, ``'sum'``), an empty tensor of the target's shape (``'none'``)."""
    per_row = logits.to(compute_dtype(logits.dtype)).sum(1) * 0.0
    return per_row if reduction == "none" else per_row.sum()
