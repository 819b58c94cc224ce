"""The one entry below the public API: a call is checked here once, then computed.

:func:`check_call` checks a call's arguments (types, shapes, options; no
synchronisation); :func:`hem` then runs the implementation :func:`~.choice.choose`
picks, and :func:`errors` gives the rows and errors of the reference layout. The
public functions and modules call nothing else of this package's math:
``hem_loss`` and ``mm_loss`` (``functional.py``), ``HEMLoss`` and ``HEMPlusLoss``
(``modules.py``), ``settled_mask`` and ``kept_mask`` (``settled.py``), and the
benchmark's HEM without threshold. The values (targets in range, finite errors,
tensor margins, weights and ``avg_factor``) are checked inside the computation, in its
one synchronisation (:func:`~.checks.check_rows`); non-finite errors take the rare path
of :func:`resolve_nonfinite`.
"""

from __future__ import annotations

import torch

from . import choice, chunked, cpu_kernel, reference, registered_op
from .checks import (
    DIVISOR_FLOOR,
    REDUCTIONS,
    NotFiniteError,
    as_class_weight,
    check_avg_factor,
    check_divisor,
    check_logits_target,
    check_margin,
    check_options,
    check_rows,
    check_weights,
    input_value_flags,
    nonfinite_message,
    value_inputs,
)
from .options import (
    LossOptions,
    compute_dtype,
    divisor,
    empty_result,
    nan_result,
    takes_small_call,
    valid_mask,
)
from .reference import Rows

__all__ = [
    "DIVISOR_FLOOR",
    "LossOptions",
    "NotFiniteError",
    "Rows",
    "as_class_weight",
    "check_call",
    "check_divisor",
    "check_rows",
    "count_online",
    "divisor",
    "empty_result",
    "errors",
    "eager_hem",
    "eager_mm",
    "hem",
    "input_value_flags",
    "mm",
    "resolve_nonfinite",
    "small_call",
    "takes_small_call",
    "value_inputs",
]


def check_call(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    p: int = 1,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    avg_factor: float | torch.Tensor | None = None,
) -> None:
    """Check a call's types, shapes and options, with no synchronisation.

    ``margin`` None: the caller's own margin, checked when it was set (the modules').
    Raises the ``TypeError`` or ``ValueError`` that names the first problem.
    """
    if reduction not in REDUCTIONS or p not in (1, 2):
        check_options(reduction, p)
    check_logits_target(logits, target)
    if margin is not None:
        check_margin(margin, logits.shape[1])
    if weight is not None or class_weight is not None:
        check_weights(weight, class_weight, target, logits.shape[1])
    if avg_factor is not None:
        check_avg_factor(avg_factor, reduction)


#: The logits' dtypes the small-call operator takes (the C++ kernel's ``dtype_index``).
SMALL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def small_call(logits, target, margin, ignore_index, mask_value, sum_: bool) -> torch.Tensor | None:
    """:func:`hem` of an unchecked call whose options pass :func:`takes_small_call`
    (``sum_``: reduction ``'sum'``), through the C++ kernel's small-call operator, which
    runs the checks of :func:`check_call` on the tensors and the value checks itself, and
    its autograd in C++. None where the operator does not take the call (not built, a
    switch other than ``auto`` and ``cpu_kernel``, under ``torch.compile``, logits that are
    not CPU float32 / float64 / bfloat16 tensors, more than one range of rows, or anything
    that needs a check): the caller then runs the checked path, which names the problem.
    The device and dtype are tested here, so a CUDA or float16 call costs two attribute
    reads, not a C++ exception."""
    op = cpu_kernel.small_op()
    if op is None or choice.setting() not in ("auto", "cpu_kernel") or registered_op.compiling():
        return None
    try:
        if (
            not logits.is_cpu
            or logits.dtype not in SMALL_DTYPES
            or logits.numel() > chunked.CHUNK_ELEMS
        ):
            return None
        if isinstance(margin, torch.Tensor):
            table, mu = margin, 0.0
        else:
            table, mu = None, float(margin)
        return op(logits, target, table, mu, ignore_index, mask_value, sum_)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return None  # the checked path raises the error that names the problem


def hem(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
    inputs: list,
) -> torch.Tensor:
    """:func:`hem_plugins.hem_loss` of a checked call, on the implementation chosen for it.

    ``inputs``: the value flags of the tensor margins and weights still to be checked
    (:func:`~.checks.value_inputs`). While ``torch.compile`` traces the call, the
    registered operator runs it (:mod:`.registered_op`), which checks the values itself.
    """
    if registered_op.compiling():
        return registered_op.margin_loss("hem", logits, target, margin, opts)
    return eager_hem(logits, target, margin, opts, inputs)


def eager_hem(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
    inputs: list,
) -> torch.Tensor:
    """:func:`hem` outside ``torch.compile``: the implementations, called directly."""
    return _eager(_run, logits, target, margin, opts, inputs)


def _eager(run, logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """``run``'s loss of a checked call, with the empty call and the rules of non-finite
    values (:func:`resolve_nonfinite`) around it."""
    if target.numel() == 0:
        return empty_result(logits, target, opts.reduction)
    try:
        return run(logits, target, margin, opts, inputs)
    except NotFiniteError:
        return resolve_nonfinite(run, logits, target, margin, opts, inputs)


def _run(logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """:func:`hem` on the implementation :func:`~.choice.choose` picks."""
    name = choice.choose(logits, opts)
    if name == "cpu_kernel":
        return cpu_kernel.run(logits, target, margin, opts, inputs)
    if name == "chunked":
        backend = chunked.TorchBackend
    elif name == "triton":
        backend = choice.triton_backend()
    else:
        return reference.run(logits, target, margin, opts, inputs)
    return chunked.TwoPassFunction.apply(logits, target, margin, opts, inputs, backend)


def mm(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
    inputs: list,
) -> torch.Tensor:
    """:func:`hem_plugins.mm_loss` of a checked call (the errors of :func:`hem` with no
    threshold), through the registered operator while ``torch.compile`` traces it."""
    if registered_op.compiling():
        return registered_op.margin_loss("mm", logits, target, margin, opts)
    return eager_mm(logits, target, margin, opts, inputs)


def eager_mm(logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """:func:`mm` outside ``torch.compile``: the reference's errors, in autograd."""
    return _eager(_mm, logits, target, margin, opts, inputs)


def _mm(logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    rows, e = errors(
        logits, target, margin, opts.ignore_index, opts.p, opts.weight, opts.class_weight
    )
    per_row = e.sum(1) / rows.num_classes
    check_rows(rows, per_row.detach().sum(), True, inputs)  # non-finite: resolve_nonfinite
    if opts.reduction == "none":
        return per_row.reshape(target.shape)
    if opts.reduction == "sum":
        return per_row.sum()
    return per_row.sum() / divisor(opts.avg_factor, rows.valid.sum(), per_row.dtype)


def resolve_nonfinite(run, logits, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """The loss of a call whose errors are not finite (``run`` raised
    :class:`~.checks.NotFiniteError`), by the rules of ``docs/design.md`` (section 3,
    rules 12 and 13), the same on every implementation:

    * rows that take no part (target ``ignore_index``, weight 0) are never used: where
      they hold NaN or +-inf, ``run`` runs again with their logits set to 0 (their
      gradient stays 0), which gives the loss of the other rows;
    * non-finite errors of the rows that take part (NaN or +inf logits, a +-inf target
      logit, an overflow) raise :class:`~.checks.NotFiniteError` (a ``ValueError`` that
      names the cause) with ``check_finite``, and make the loss NaN without it
      (:func:`~.options.nan_result`: every entry of the loss and of the gradient).

    The rare path: the common call never gets here and pays nothing for it. On CUDA
    with ``check_finite=False`` the implementations do not synchronise and never get
    here: there these rules do not apply.
    """
    c = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    valid = valid_mask(target, c, opts.ignore_index, opts.weight, opts.class_weight, dtype)
    keep = valid.unsqueeze(1)
    if bool((~torch.isfinite(logits.detach()) & ~keep).any()):
        try:
            return run(logits.masked_fill(~keep, 0.0), target, margin, opts, inputs)
        except NotFiniteError:
            pass  # the rows that take part have non-finite errors too
    if opts.check_finite:
        raise NotFiniteError(nonfinite_message(logits, target, valid))
    return nan_result(logits, opts.reduction)


def errors(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    ignore_index: int,
    p: int = 1,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
) -> tuple[Rows, torch.Tensor]:
    """The rows of a checked call and their errors ``(N, C, S)``: zero at the target and on
    invalid rows, squared for ``p = 2``, times the row weights. The caller runs the value
    checks (:func:`~.checks.check_rows`) with what it fetches beside them."""
    rows = Rows(logits, target, margin, ignore_index, weight, class_weight)
    return rows, rows.weighted(rows.hinge(), p)


def count_online(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    counts: torch.Tensor,
    scale_over_k: float,
    fallback: float,
) -> torch.Tensor | None:
    """HEM+'s online counting through the C++ kernel (:func:`~.cpu_kernel.count_online`)
    where the switch allows the kernel (``"auto"``, ``"cpu_kernel"``); None, having changed
    nothing, where it does not run (the caller then counts in torch ops)."""
    if choice.setting() not in ("auto", "cpu_kernel"):
        return None
    return cpu_kernel.count_online(
        target, num_classes, ignore_index, counts, scale_over_k, fallback
    )
