"""The loss as a registered PyTorch operator, for ``torch.compile``.

``torch.compile`` cannot trace into the implementations (the C++ kernel is called
through ``ctypes`` under a lock, the value checks synchronise, the Triton kernels are
launched from an ``autograd.Function``). While a function is being compiled,
:func:`~.entry.hem` and :func:`~.entry.mm` call the operator
``hem_plugins::margin_loss`` instead: one opaque node in the graph, with a fake
(meta) implementation that gives the output shapes and a registered autograd
formula, so that ``torch.compile(..., fullgraph=True)`` traces a training step
with the loss in it and no graph break. In eager mode nothing changes: the
calls go to the implementations directly, which is faster than any operator
round trip.

The operator runs the eager loss (whichever implementation :func:`~.choice.choose`
picks, its checks and the rules of non-finite values included) and, when the
logits need a gradient, the gradient of every row's loss with respect to its
logits (``G``, the logits' shape and dtype). The loss is linear in that
gradient's scale: the backward is ``grad_out * G`` (``grad_out`` broadcast over a
row's ``C`` entries for ``reduction='none'``). So a compiled training step keeps
``G`` between forward and backward, a tensor of the logits' size, where the eager
step keeps a bit mask; cross-entropy keeps its log-probabilities, of the same size.

``torch.library.custom_op`` and ``register_fake`` came with torch 2.4. On older
torch :data:`AVAILABLE` is False and compiling a function with the loss graph-breaks
around it, as it always did; the eager loss is unchanged there.
"""

# ruff: noqa: UP045  (torch.library.custom_op reads Optional[...] on every torch it supports)
from __future__ import annotations

import contextlib
import warnings
from typing import Optional

import torch

from .options import LossOptions, compute_dtype

__all__ = ["ARGS", "AVAILABLE", "OP_NAME", "compiling", "margin_loss", "warn"]

OP_NAME = "hem_plugins::margin_loss"
"""The operator's name (``torch.ops.hem_plugins.margin_loss``)."""

AVAILABLE = (
    hasattr(torch.library, "custom_op")
    and hasattr(torch.library, "register_fake")
    and hasattr(torch._C, "_SetExcludeDispatchKeyGuard")
)
"""Whether this torch registers the operator (2.4 and later)."""

_AUTOGRAD_KEYS = ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor")


@contextlib.contextmanager
def _autograd_below_the_operator():
    """Autograd inside the operator's implementation, which the dispatcher runs with the
    autograd keys excluded (the operator's own autograd formula is above it): the
    eager loss records its graph there, so that one backward gives ``G``."""
    with contextlib.ExitStack() as stack:
        for name in _AUTOGRAD_KEYS:
            key = getattr(torch._C.DispatchKey, name)
            stack.enter_context(torch._C._SetExcludeDispatchKeyGuard(key, False))
        stack.enter_context(torch.enable_grad())
        yield


# torch.compiler.is_compiling came with 2.3; older torch has no operator to call anyway.
_is_compiling = torch.compiler.is_compiling if AVAILABLE else None


def compiling() -> bool:
    """True while ``torch.compile`` traces the caller (and the operator is registered)."""
    return AVAILABLE and _is_compiling()


_NOTES: list = []  # warnings raised while compiling, said by the operator's next run


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """``warnings.warn``, also from code that ``torch.compile`` traces: there (Dynamo cannot
    trace ``warnings.warn``) the warning is kept and said when the operator next runs,
    at the compiled function's next call."""
    if compiling():
        _NOTES.append((message, category))
    else:
        warnings.warn(message, category, stacklevel=stacklevel + 1)


def _say_notes() -> None:
    while _NOTES:
        message, category = _NOTES.pop(0)
        warnings.warn(message, category, stacklevel=2)


def _kernel_loss_and_grad(logits, target, margin, opts: LossOptions):
    """The loss and ``G`` of a call the C++ kernel runs, with no autograd graph
    (:func:`~.cpu_kernel.loss_and_grad`); None where another implementation runs the call,
    or where its values need the rules of :func:`~.entry.resolve_nonfinite`."""
    from . import choice, cpu_kernel
    from .checks import NotFiniteError, value_inputs

    if target.numel() == 0 or choice.choose(logits, opts) != "cpu_kernel":
        return None
    inputs = value_inputs(
        logits, opts.check_finite, margin, opts.weight, opts.class_weight, opts.avg_factor
    )
    try:
        return cpu_kernel.loss_and_grad(logits, target, margin, opts, inputs)
    except NotFiniteError:
        return None


#: The operator's arguments, in its schema's order: the logits and targets, then a call's
#: margin and :class:`~.options.LossOptions` flattened into types a schema takes
#: (:func:`_flatten`, :func:`_unflatten`), then whether it is HEM (with the threshold) and
#: whether the logits need ``G``.
ARGS = (
    "logits", "target", "margin_table", "margin_value", "weight", "class_weight",
    "avg_factor_tensor", "avg_factor_value", "ignore_index", "reduction", "p", "mask_value",
    "check_finite", "divisor_kind", "divisor_f", "threshold", "with_grad",
)  # fmt: skip


def _flatten(margin: float | torch.Tensor, opts: LossOptions) -> tuple:
    """A call's margin and options as the operator's arguments ``margin_table`` ...
    ``divisor_f`` of :data:`ARGS`: a tensor or a float where a value may be either."""
    table = margin if isinstance(margin, torch.Tensor) else None
    avg = opts.avg_factor
    avg_tensor = avg if isinstance(avg, torch.Tensor) else None
    avg_value = None if avg is None or avg_tensor is not None else float(avg)
    return (
        table,
        0.0 if table is not None else float(margin),
        opts.weight,
        opts.class_weight,
        avg_tensor,
        avg_value,
        opts.ignore_index,
        opts.reduction,
        opts.p,
        opts.mask_value,
        opts.check_finite,
        opts.divisor[0],
        float(opts.divisor[1]),
    )


def _unflatten(args: tuple) -> tuple[float | torch.Tensor, LossOptions]:
    """The margin and options :func:`_flatten` flattened."""
    (table, value, weight, class_weight, avg_tensor, avg_value, ignore_index, reduction, p,
     mask_value, check_finite, divisor_kind, divisor_f) = args  # fmt: skip
    margin = value if table is None else table
    avg_factor = avg_value if avg_tensor is None else avg_tensor
    opts = LossOptions(
        ignore_index=ignore_index,
        reduction=reduction,
        p=p,
        weight=weight,
        class_weight=class_weight,
        avg_factor=avg_factor,
        mask_value=mask_value,
        check_finite=check_finite,
        divisor=(divisor_kind, divisor_f),
    )
    return margin, opts


def _eager(
    kind: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
) -> torch.Tensor:
    from . import entry  # entry imports this module
    from .checks import value_inputs

    inputs = value_inputs(
        logits, opts.check_finite, margin, opts.weight, opts.class_weight, opts.avg_factor
    )
    run = entry.eager_hem if kind == "hem" else entry.eager_mm
    return run(logits, target, margin, opts, inputs)


if AVAILABLE:

    @torch.library.custom_op(OP_NAME, mutates_args=())
    def _margin_loss_op(
        logits: torch.Tensor,
        target: torch.Tensor,
        margin_table: Optional[torch.Tensor],
        margin_value: float,
        weight: Optional[torch.Tensor],
        class_weight: Optional[torch.Tensor],
        avg_factor_tensor: Optional[torch.Tensor],
        avg_factor_value: Optional[float],
        ignore_index: int,
        reduction: str,
        p: int,
        mask_value: Optional[float],
        check_finite: bool,
        divisor_kind: str,
        divisor_f: float,
        threshold: bool,
        with_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _say_notes()
        margin, opts = _unflatten(
            (margin_table, margin_value, weight, class_weight, avg_factor_tensor,
             avg_factor_value, ignore_index, reduction, p, mask_value, check_finite,
             divisor_kind, divisor_f)
        )  # fmt: skip
        kind = "hem" if threshold else "mm"
        if with_grad and threshold:
            fast = _kernel_loss_and_grad(logits, target, margin, opts)
            if fast is not None:
                return fast
        if not with_grad:
            with torch.no_grad():
                loss = _eager(kind, logits, target, margin, opts)
            return loss.clone(), logits.new_empty(0)
        x = logits.detach().requires_grad_(True)
        with _autograd_below_the_operator():
            loss = _eager(kind, x, target, margin, opts)
            # Every row's loss depends on its own logits alone (the threshold and the
            # divisor are constants of the graph), so one backward gives each row's G.
            (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(logits)
        return loss.detach(), grad

    @_margin_loss_op.register_fake
    def _(logits, target, margin_table, margin_value, weight, class_weight,
          avg_factor_tensor, avg_factor_value, ignore_index, reduction, p, mask_value,
          check_finite, divisor_kind, divisor_f, threshold, with_grad):  # fmt: skip
        shape = () if reduction != "none" else target.shape
        loss = logits.new_empty(shape, dtype=compute_dtype(logits.dtype))
        grad = torch.empty_like(logits) if with_grad else logits.new_empty(0)
        return loss, grad

    def _setup_context(ctx, inputs, output) -> None:
        ctx.reduction = inputs[ARGS.index("reduction")]
        ctx.with_grad = inputs[ARGS.index("with_grad")]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    def _backward(ctx, grad_loss, _grad_of_g):
        (g,) = ctx.saved_tensors
        grads = [None] * len(ARGS)
        if ctx.with_grad:
            if ctx.reduction == "none":
                grad_loss = grad_loss.unsqueeze(1)  # one value per row, over its C entries
            grads[0] = (grad_loss * g).to(g.dtype)
        return tuple(grads)

    _margin_loss_op.register_autograd(_backward, setup_context=_setup_context)


def margin_loss(
    kind: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    opts: LossOptions,
) -> torch.Tensor:
    """The loss of a checked call (``kind`` ``"hem"``, or ``"mm"`` without threshold)
    through the registered operator: what :func:`~.entry.hem` returns, as one node of a
    compiled graph. Requires :data:`AVAILABLE`."""
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _ = torch.ops.hem_plugins.margin_loss(
        logits, target, *_flatten(margin, opts), kind == "hem", with_grad
    )
    return loss
