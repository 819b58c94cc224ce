"""The checks of a loss call: arguments (types, shapes, options) and values; every message
names the problem.

The argument checks run before any computation and never synchronise. The value checks
(a target outside ``[0, C)``, non-finite errors, bad tensor margins, weights and
``avg_factor``) are computed inside the loss as 0-dim flags and fetched in one
synchronisation (:func:`check_rows`), the only one a call makes. Errors that are not
finite raise :class:`NotFiniteError`, which ``entry.resolve_nonfinite`` turns into the
loss's rule (``docs/design.md``, section 3): the values of rows that take no part are
never used, and ``check_finite=False`` gives NaN.
"""

from __future__ import annotations

import math
import numbers

import torch

from .options import compute_dtype, valid_mask

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
    if logits.shape[1] == 0:
        raise ValueError(
            f"logits have C = 0 classes (shape {tuple(logits.shape)}): the loss needs at "
            "least one class"
        )
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
        if not isinstance(class_weight, torch.Tensor):
            raise TypeError(
                "class_weight must be a tensor or a list or tuple of C numbers, got "
                f"{type(class_weight).__name__}"
            )
        if class_weight.dim() != 1 or class_weight.numel() != num_classes:
            raise ValueError(
                f"class_weight must have C={num_classes} entries, got shape {tuple(class_weight.shape)}"
            )


def as_class_weight(class_weight, logits: torch.Tensor) -> torch.Tensor | None:
    """``class_weight`` as a tensor: a list or tuple of numbers becomes one, in the dtype
    the errors are computed in, on the logits' device; None and tensors are returned as
    they are (:func:`check_weights` checks them)."""
    if class_weight is None or isinstance(class_weight, torch.Tensor):
        return class_weight
    if not isinstance(class_weight, (list, tuple)):
        raise TypeError(
            "class_weight must be a tensor or a list or tuple of C numbers, got "
            f"{type(class_weight).__name__}"
        )
    on_logits = isinstance(logits, torch.Tensor) and logits.is_floating_point()
    try:
        return torch.tensor(
            class_weight,
            dtype=compute_dtype(logits.dtype) if on_logits else torch.float32,
            device=logits.device if on_logits else None,
        )
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"class_weight must be a list or tuple of C numbers, got {class_weight!r}: {err}"
        ) from None


def check_avg_factor(avg_factor, reduction: str) -> None:
    """``avg_factor``: a finite number ``>= 0`` or a one-element tensor (its value is checked
    in the loss's one synchronisation, :func:`input_value_flags`), with ``'mean'`` or
    ``'none'``. mmseg passes the number of valid elements, 0 for an empty batch: 0 (and
    anything below float32 eps) divides by eps, so that the empty batch's loss is 0."""
    if reduction == "sum":
        raise ValueError('avg_factor can only be used with reduction="mean" (or "none")')
    if isinstance(avg_factor, torch.Tensor):
        if avg_factor.numel() != 1:
            raise ValueError(
                "avg_factor must be a number or a one-element tensor, got a tensor of shape "
                f"{tuple(avg_factor.shape)}"
            )
        if avg_factor.is_complex() or avg_factor.dtype == torch.bool:
            raise TypeError(f"avg_factor must be a real number, got dtype {avg_factor.dtype}")
        return
    if isinstance(avg_factor, bool) or not isinstance(avg_factor, numbers.Real):
        raise TypeError(
            f"avg_factor must be a number or a one-element tensor, got {type(avg_factor).__name__}"
        )
    if not math.isfinite(avg_factor) or avg_factor < 0:
        raise ValueError(
            f"avg_factor must be a finite number >= 0 (mmseg's number of valid elements), "
            f"got {avg_factor!r}"
        )


def input_value_flags(
    margin: float | torch.Tensor,
    weight: torch.Tensor | None,
    class_weight: torch.Tensor | None,
    avg_factor: float | torch.Tensor | None = None,
) -> list[tuple[torch.Tensor, str, torch.Tensor]]:
    """``(flag, name, tensor)`` for each tensor input whose values must be finite and >= 0.

    The flags are 0-dim bool tensors, True on a bad value; the loss fetches
    them with its other checks in one synchronisation (:func:`raise_for_values`).
    """
    out = []
    named = (
        ("margin", margin),
        ("weight", weight),
        ("class_weight", class_weight),
        ("avg_factor", avg_factor),
    )
    for name, v in named:
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


class NotFiniteError(ValueError):
    """The errors of a call are not finite (its message says why: :func:`nonfinite_message`).

    Raised by the implementations after their one synchronisation; ``entry.hem`` catches it
    and applies the loss's rule (``entry.resolve_nonfinite``): rows that take no part do not
    count, and ``check_finite=False`` gives NaN. Elsewhere it is the ``ValueError`` it names.
    """


def nonfinite_message(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> str:
    """Why the errors of the ``valid`` rows (a bool tensor, one entry per row) are not finite:
    NaN or +inf logits, a target logit of -inf, or errors that overflow the dtype they are
    computed in. Worked out on error only (several passes over the logits)."""
    n, c = logits.shape[:2]
    rows = valid.reshape(n, -1)
    x = logits.detach().reshape(n, c, -1).transpose(1, 2)[rows]  # (V, C)
    n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isposinf(x).sum())
    skip = "pass check_finite=False to skip this check: the loss is then NaN"
    if n_nan or n_inf:
        return (
            f"logits contain {n_nan} NaN and {n_inf} +inf values in rows that take part "
            f"(rows of ignore_index or of weight 0 are not checked; {skip})"
        )
    t = target.reshape(n, -1)[rows].long().unsqueeze(1)
    if bool(torch.isneginf(x.gather(1, t)).any()):
        return (
            "the errors are not finite: a valid row has a target logit of -inf "
            f"(a masked unit cannot be a target; {skip})"
        )
    dtype = str(compute_dtype(logits.dtype)).removeprefix("torch.")
    largest = float(x.abs().amax()) if x.numel() else 0.0
    return (
        f"the errors overflow {dtype}: logits too large (the largest |logit| of a row that "
        f"takes part is {largest:.3g}; an error, x_i - x_t + margin times the row weight, "
        f"must stay below {torch.finfo(compute_dtype(logits.dtype)).max:.3g}; {skip})"
    )


def raise_for_values(
    flags: list[bool],
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    num_classes: int,
    inputs: list[tuple[str, torch.Tensor]] = (),
    valid: torch.Tensor | None = None,
) -> None:
    """Turn the value flags computed inside the loss into clear errors.

    ``flags = [bad_target]`` or ``[bad_target, nonfinite, *input flags]``
    (one per ``inputs`` entry, see :func:`input_value_flags`), fetched from
    the device in one synchronisation; the details are worked out only on error.
    Non-finite errors raise :class:`NotFiniteError` about the ``valid`` rows (by
    default the rows whose target is in ``[0, C)``).
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
        if valid is None:
            valid = valid_mask(target, num_classes, ignore_index, None, None, logits.dtype)
        raise NotFiniteError(nonfinite_message(logits, target, valid))


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
    margins, weights and ``avg_factor`` (:func:`input_value_flags`; callers pass none on
    CUDA with ``check_finite=False``, see :func:`value_inputs`); with ``check_finite``, a
    sum of errors ``total`` that is not finite (a NaN or +inf logit, a valid row whose
    target logit is -inf, or an overflow) and a +inf target logit of a valid row (its
    errors clamp to 0, so ``total`` does not show it), which raise :class:`NotFiniteError`.
    The loss's implementations always ask for this check: ``entry.hem`` applies the call's
    own ``check_finite`` (``entry.resolve_nonfinite``).
    ``rows`` (``reference.Rows`` or ``chunked.RowData``) has the ``bad_target`` and
    ``posinf_target`` flags, the validity of each row and the inputs the messages quote.
    Raises the error that names the first problem; returns the ``extra`` scalars as floats.
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
        rows.valid,
    )
    return values[n_flags:]


def value_inputs(logits, check_finite, margin, weight, class_weight, avg_factor=None) -> list:
    """The value flags of tensor margins, weights and ``avg_factor`` (:func:`input_value_flags`),
    checked on every CPU call and on CUDA calls with ``check_finite`` (the one
    synchronisation); none on CUDA with ``check_finite=False``, which synchronises not at all."""
    if not check_finite and logits.is_cuda:
        return []
    return input_value_flags(margin, weight, class_weight, avg_factor)


def assert_targets_async(rows) -> None:
    """The target range check with no synchronisation (CUDA, ``check_finite=False``).

    A target outside ``[0, C)`` fails a device-side assertion, as in
    ``torch.nn.functional.cross_entropy`` on CUDA.
    """
    torch._assert_async(
        ~rows.bad_target, "hem_loss: a target is outside [0, C) and not ignore_index"
    )
