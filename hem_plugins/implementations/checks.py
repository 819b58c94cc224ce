"""The checks of a loss call: arguments (types, shapes, options) and values; every message
names the problem.

The argument checks run before any computation and never synchronise. The value checks
(a target outside ``[0, C)``, non-finite logits, bad tensor margins and weights) are
computed inside the loss as 0-dim flags and fetched in one synchronisation
(:func:`check_rows`), the only one a call makes.
"""

from __future__ import annotations

import math

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_options(reduction: str, p: int) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")


def check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"logits and target must be tensors, got {type(logits).__name__} and {type(target).__name__}"
        )
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (N, C) or (N, C, d1, ...), got {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected target of shape {expected}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")


def check_margin(margin: float | torch.Tensor, num_classes: int) -> None:
    """Shape of a tensor margin, value of a float one; a tensor's values are checked by
    :func:`input_value_flags` in the loss's one synchronisation."""
    if isinstance(margin, torch.Tensor):
        if margin.dim() == 1:
            if margin.numel() != num_classes:
                raise ValueError(
                    f"per-class margin has {margin.numel()} entries but logits have "
                    f"C={num_classes} classes"
                )
        elif margin.dim() != 0:
            raise ValueError(
                f"margin must be a float or a 1-D tensor of C margins, got shape {tuple(margin.shape)}"
            )
    else:
        try:
            value = float(margin)
        except (TypeError, ValueError):
            raise TypeError(
                f"margin must be a float or a 1-D tensor, got {type(margin).__name__}"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"margin must be a non-negative finite number, got {margin!r}")


def check_weights(
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    target: torch.Tensor,
    num_classes: int,
) -> None:
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            raise TypeError(
                f"weight must be a tensor of per-row weights, got {type(weight).__name__}"
            )
        if tuple(weight.shape) != tuple(target.shape):
            raise ValueError(
                f"weight shape {tuple(weight.shape)} must equal the target shape {tuple(target.shape)}"
            )
    if class_weight is not None:
        if class_weight.dim() != 1 or class_weight.numel() != num_classes:
            raise ValueError(
                f"class_weight must have C={num_classes} entries, got shape {tuple(class_weight.shape)}"
            )


def input_value_flags(
    margin: float | torch.Tensor,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
) -> list[tuple[torch.Tensor, str, torch.Tensor]]:
    """``(flag, name, tensor)`` for each tensor input whose values must be finite and >= 0.

    The flags are 0-dim bool tensors, True on a bad value; the loss fetches
    them with its other checks in one synchronisation (:func:`raise_for_values`).
    """
    out = []
    for name, v in (("margin", margin), ("weight", weight), ("class_weight", class_weight)):
        if isinstance(v, torch.Tensor) and v.numel():
            values = v.detach().reshape(-1)
            if values.dtype == torch.float16 and values.device.type == "cpu":
                values = values.float()  # exact; torch 2.1 has no float16 aminmax on the CPU
            lo, hi = torch.aminmax(values)
            out.append((~((lo >= 0) & torch.isfinite(hi)), name, v))
    return out


def _raise_for_input(name: str, v: torch.Tensor) -> None:
    values = v.detach().reshape(-1)
    if not bool(torch.isfinite(values).all()):
        if name == "margin":
            raise ValueError(f"margin must be finite, got {values.tolist()}")
        raise ValueError(f"{name} must be finite")
    if bool((values < 0).any()):
        if name == "margin":
            raise ValueError(f"margin must be non-negative, got {values.tolist()}")
        raise ValueError(f"{name} must be non-negative")


def raise_for_values(
    flags: list[bool],
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    num_classes: int,
    inputs: list[tuple[str, torch.Tensor]] = (),
) -> None:
    """Turn the value flags computed inside the loss into clear errors.

    ``flags = [bad_target]`` or ``[bad_target, nonfinite, *input flags]``
    (one per ``inputs`` entry, see :func:`input_value_flags`), fetched from
    the device in one synchronisation; the details are worked out only on error.
    """
    for flag, (name, v) in zip(flags[2:], inputs, strict=False):
        if flag:
            _raise_for_input(name, v)
    if flags[0]:
        flat = target.reshape(-1)
        flat = flat[flat != ignore_index]
        bad = flat[(flat < 0) | (flat >= num_classes)].unique()[:10].tolist()
        raise ValueError(
            f"target holds class indices {bad} outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}"
        )
    if len(flags) > 1 and flags[1]:
        x = logits.detach()
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isposinf(x).sum())
        if n_nan or n_inf:
            raise ValueError(
                f"logits contain {n_nan} NaN and {n_inf} +inf values "
                "(pass check_finite=False to skip this check)"
            )
        raise ValueError(
            "the errors are not finite: a valid row has a target logit of -inf "
            "(a masked unit cannot be a target; pass check_finite=False to skip this check)"
        )


DIVISORS = ("kept", "rows", "floor")
DIVISOR_FLOOR = 0.1
"""``f`` of ``divisor="floor"`` (``max(|K|, f |V|)``) when none is given; chosen on
validation data, see ``docs/divisor.md``."""


def check_divisor(divisor) -> tuple[str, float]:
    """``(kind, f)`` of a ``divisor`` option: ``"kept"``, ``"rows"``, ``"floor"`` (with
    :data:`DIVISOR_FLOOR`) or ``("floor", f)`` with a finite ``f > 0``; ``f`` is 0.0 for
    the other two. Raises a ``ValueError`` / ``TypeError`` that names the problem."""
    if isinstance(divisor, str):
        if divisor not in DIVISORS:
            raise ValueError(f"divisor must be one of {DIVISORS} or ('floor', f), got {divisor!r}")
        return divisor, DIVISOR_FLOOR if divisor == "floor" else 0.0
    if isinstance(divisor, (tuple, list)) and len(divisor) == 2 and divisor[0] == "floor":
        f = divisor[1]
        if isinstance(f, bool) or not isinstance(f, (int, float)):
            raise TypeError(f"divisor=('floor', f) needs a number f, got {type(f).__name__} {f!r}")
        if not math.isfinite(f) or f <= 0:
            raise ValueError(
                f"divisor=('floor', f) needs a finite f > 0 (a fraction of the valid rows), "
                f"got {f!r}"
            )
        return "floor", float(f)
    raise ValueError(
        f"divisor must be one of {DIVISORS} or ('floor', f) with a number f > 0, got {divisor!r}"
    )


def check_rows(
    rows,
    total: torch.Tensor | None,
    check_finite: bool,
    inputs: list[tuple[torch.Tensor, str, torch.Tensor]],
    *extra: torch.Tensor,
) -> list[float]:
    """Run the value checks of one call; fetch them and ``extra`` in one synchronisation.

    The checks: a target outside ``[0, C)`` and the ``inputs`` flags of tensor
    margins and weights (:func:`input_value_flags`; callers pass none on CUDA with
    ``check_finite=False``, see :func:`value_inputs`); with ``check_finite``, a sum
    of errors ``total`` that is not finite (a NaN or +inf logit, or a valid row whose
    target logit is -inf) and a +inf target logit (its errors clamp to 0, so
    ``total`` does not show it).
    ``rows`` (``reference.Rows`` or ``chunked.RowData``) has the ``bad_target`` and
    ``posinf_target`` flags and the inputs the messages quote. Raises the error that
    names the first problem; returns the ``extra`` scalars as floats.
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
    """The value flags of tensor margins and weights (:func:`input_value_flags`), checked
    on every CPU call and on CUDA calls with ``check_finite`` (the one synchronisation);
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
