"""The C++ kernel (``cpu_kernel.cpp``, compiled on first use), called through ``ctypes``.

One C++ function per step of the two-pass algorithm of ``chunked.py`` (the error sum
and the value flags; the kept mask, kept sum and count; the gradient), each a single
pass over a range of rows of the ``(N, C, S)`` logits read in place through their
strides, for ``p = 1`` and float32, float64 or bfloat16 CPU logits (computed in
float32, or float64). It includes no torch header, and ``ctypes`` releases the GIL:
large inputs are split into row ranges of about ``chunked.CHUNK_ELEMS`` logits on the
thread pool of ``thread_pool.py``; a small one takes one call for both forward passes
and one for the backward, so a call costs three allocations and two foreign calls
instead of tens of torch ops. The same library counts HEM+'s classes online
(:func:`count_online`).

The first use compiles the source with the system's C++ compiler (``$CXX``, which
may hold arguments, else ``c++``; about 2-10 s) into ``cpu_kernel/`` under
``$HEM_PLUGINS_CACHE`` (default ``~/.cache/hem_plugins``), keyed by a hash of the
source, compiler, flags and CPU, and later processes load it from there, each
library checked against the SHA-256 recorded beside it, under a lock, in a
directory that only this user can write (``native_build.py``). Where it does
not build the automatic choice runs another implementation (``choice.py``), after
one :class:`KernelBuildWarning` per process that names the reason;
:func:`available` says whether the kernel is in use and :data:`BUILD_ERROR` why not.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from . import chunked, native_build
from .checks import raise_for_values
from .options import (
    LossOptions,
    backward_coef,
    compute_dtype,
    divisor,
    margin_table,
    num_positions,
    takes_small_call,
    valid_rows,
)
from .thread_pool import for_chunks

BLOCK = 256
"""Rows per block of the kernel's mask layout for ``S > 1`` (``BLOCK`` in the source)."""

_SOURCE = Path(__file__).with_name("cpu_kernel.cpp")
_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-trapping-math", "-fno-signed-zeros"]
_FLAGS += ["-fassociative-math"]  # lets sums vectorise; NaN and inf keep their meaning
_NATIVE = ["-march=native"]
DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
"""The logit dtypes the kernel takes, and their names in the library's symbols."""
_INDEX = {torch.uint8: "u8", torch.int16: "i16", torch.int32: "i32"}

_lib = None
_tried = False
_lock = threading.Lock()
BUILD_ERROR: str | None = None
"""Why the kernel is not in use (None while it is, or before the first try)."""


class KernelBuildWarning(RuntimeWarning):
    """The C++ kernel did not build or load, so the automatic choice runs the torch
    implementations; said once per process, with the reason and the variables to set."""


def cache_dir() -> Path:
    """The directory of the kernel's libraries: ``cpu_kernel/`` under the cache root
    (``$HEM_PLUGINS_CACHE``, default ``~/.cache/hem_plugins``)."""
    return native_build.cache_dir() / "cpu_kernel"


def torch_flags() -> list[str]:
    """The flags that build the small-call operator into the library (``-DHEM_TORCH_OP``,
    this torch's headers, libraries and ABI; its version is in the cache key)."""
    root = Path(torch.__file__).parent
    include, lib = root / "include", root / "lib"
    std = "c++20" if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 8) else "c++17"
    return [
        "-DHEM_TORCH_OP",
        f"-DHEM_TORCH_VERSION={torch.__version__}",
        f"-std={std}",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-isystem",
        str(include),
        "-isystem",
        str(include / "torch" / "csrc" / "api" / "include"),
        "-w",
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",
        "-Wl,--no-as-needed",
        "-lc10",
        "-ltorch_cpu",
    ]


def _build():
    with_op = torch_flags()
    flag_sets = (_FLAGS + _NATIVE + with_op, _FLAGS + with_op, _FLAGS + _NATIVE, _FLAGS)
    return native_build.load(_SOURCE, cache_dir(), flag_sets, _declare)


def _warn_not_built(reason: str) -> None:
    from .choice import ENV_VAR  # choice imports this module

    def shown(name: str) -> str:
        value = os.environ.get(name)
        return f"{name}={value!r}" if value else f"{name} unset"

    warnings.warn(
        f"the C++ kernel is not in use, so the loss runs on the slower torch implementations: "
        f"{reason}. Environment: {shown(native_build.COMPILER_ENV)}, "
        f"{shown(native_build.CACHE_ENV)} (the kernel's cache: {cache_dir()}), {shown(ENV_VAR)}. "
        f"Set {native_build.COMPILER_ENV} to a working C++ compiler (arguments allowed: "
        f"'ccache g++'), {native_build.CACHE_ENV} to a directory of your own, or "
        f"{ENV_VAR}=chunked to run without the kernel.",
        KernelBuildWarning,
        stacklevel=3,
    )


_PASS1: dict = {}  # logit dtype -> function
_PASS2: dict = {}  # (logit dtype, target dtype) -> function
_GRAD: dict = {}  # (logit dtype, target dtype) -> function
_FORWARD: dict = {}  # (logit dtype, target dtype) -> both passes in one call


def _declare(lib):
    i64, dbl, ptr, c_int = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p, ctypes.c_int
    head = [ptr, i64, i64, i64, i64, i64, i64, i64, ptr, i64, ptr, ptr, dbl, ptr]
    for dtype, d in DTYPES.items():
        fn = _PASS1[dtype] = getattr(lib, f"hem_pass1_{d}")
        fn.argtypes, fn.restype = head + [c_int, dbl, ptr], None
        for tdtype, ix in _INDEX.items():
            fn = _PASS2[dtype, tdtype] = getattr(lib, f"hem_pass2_{d}_{ix}")
            fn.argtypes, fn.restype = head + [dbl, ptr, ptr, ptr, ptr, ptr], None
            fn = _GRAD[dtype, tdtype] = getattr(lib, f"hem_grad_{d}_{ix}")
            fn.argtypes = [ptr, ptr, i64, i64, i64, i64, dbl, ptr, ptr, ptr]
            fn.restype = None
            fn = _FORWARD[dtype, tdtype] = getattr(lib, f"hem_forward_{d}_{ix}")
            fn.argtypes, fn.restype = head + [c_int, dbl, ptr, ptr, ptr, ptr, ptr], None
    fn = lib.hem_count_online
    fn.argtypes, fn.restype = [ptr, i64, i64, i64, ptr, ptr, dbl, dbl], None
    _register_op(lib)
    return lib


_SMALL = None  # torch.ops.hem_plugins_kernel.small_loss, where the library registered it
_NEEDS_CHECKS = "hem_plugins_kernel: the values need the checks"


def _register_op(lib) -> None:
    """Register the library's small-call operator (built with :func:`torch_flags`; a library
    built without them has none, and every call goes through :class:`KernelFunction`)."""
    global _SMALL
    try:
        register = lib.hem_register_op
    except AttributeError:
        return
    register.argtypes, register.restype = [], ctypes.c_int
    if register() >= 0:
        _SMALL = torch.ops.hem_plugins_kernel.small_loss.default


def count_online(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    counts: torch.Tensor,
    scale_over_k: float,
    fallback: float,
) -> torch.Tensor | None:
    """HEM+ online counting in one call: add the valid targets to ``counts`` (float64,
    ``(C,)``, in place) and return their margins in a new float32 ``(C,)`` tensor.

    Returns None, having changed nothing, where the kernel does not apply (not
    built, not CPU, or other dtypes or layouts). The checks are ordered by cost:
    the common case is a few attribute reads, one allocation and one foreign call.
    """
    if not (target.is_cpu and counts.is_cpu and counts.dtype == torch.float64):
        return None
    if counts.shape != (num_classes,) or not counts.is_contiguous():
        return None
    if _lib is None and (_tried or not available()):
        return None
    t = target
    if t.dtype != torch.int64 or not t.is_contiguous():
        t = t.to(torch.int64).contiguous()
    margins = torch.empty(num_classes, dtype=torch.float32)
    _lib.hem_count_online(
        t.data_ptr(),
        t.numel(),
        num_classes,
        ignore_index,
        counts.data_ptr(),
        margins.data_ptr(),
        scale_over_k,
        fallback,
    )
    return margins


def available() -> bool:
    """Whether the kernel is built and loaded (building or loading it on the first call).

    The first call that fails sets :data:`BUILD_ERROR` and warns once
    (:class:`KernelBuildWarning`); later calls return False at once."""
    global _lib, _tried, BUILD_ERROR
    if _tried:
        return _lib is not None
    failed = None
    with _lock:
        if not _tried:
            try:
                _lib = _build()
            except native_build.BuildError as err:  # no compiler, an unsafe cache, ...
                BUILD_ERROR = failed = str(err)
            except Exception as err:  # anything else: torch ops too, never a failed loss
                BUILD_ERROR = failed = f"{type(err).__name__}: {err}"
            _tried = True
    if failed:  # outside the lock: a warning turned into an error must not hold it
        _warn_not_built(failed)
    return _lib is not None


def cannot_run(x: torch.Tensor, p: int) -> str | None:
    """Why the kernel cannot run ``x`` with this ``p`` (None: it can): it takes CPU logits,
    ``p = 1``, float32, float64 or bfloat16, and must have built (it is built here on the
    first call that needs it)."""
    if p != 1:
        return f"it computes p = 1 only, got p = {p}"
    if x.dtype not in DTYPES:
        return f"it takes float32, float64 and bfloat16 logits, got {x.dtype}"
    if not x.is_cpu:
        return f"it runs on the CPU, got logits on {x.device}"
    if _lib is None and not available():
        return f"it did not build: {BUILD_ERROR}"
    return None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` flattened, contiguous, of ``dtype`` (no copy when it already is)."""
    if t is None:
        return None
    return t.reshape(-1).to(dtype).contiguous()


def _ranges(rows: int, c: int, s: int) -> list[tuple[int, int]]:
    """Row ranges of about ``chunked.CHUNK_ELEMS`` logits, split where no two share a mask byte."""
    if rows * c <= chunked.CHUNK_ELEMS:
        return [(0, rows)]
    align = 8 if s == 1 else BLOCK
    step = max(align, (chunked.CHUNK_ELEMS // max(c, 1)) // align * align)
    return [(j, min(j + step, rows)) for j in range(0, rows, step)]


def _run(fn, ranges: list[tuple[int, int]]) -> list:
    """``fn(j0, j1)`` over the row ranges: directly for one, on the thread pool for more."""
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    return for_chunks(fn, ranges, _CPU, caller_runs=True)


_CPU = torch.device("cpu")


_OUT6 = ctypes.c_double * 6
_OUT4 = ctypes.c_double * 4
_OUT2 = ctypes.c_double * 2


def _sum_outs(outs, i: int) -> float:
    return outs[0][i] if len(outs) == 1 else math.fsum(o[i] for o in outs)


def _num_valid(count: float, c: int, t: torch.Tensor, opts: LossOptions, dtype) -> float:
    """``|V|`` for ``divisor="rows"`` / ``"floor"``: pass 1's entry count over ``C``
    (exact: a sum of integers), or, with ``mask_value`` (the count is of active units),
    one pass over the targets."""
    if opts.mask_value is None:
        return count / c
    return float(valid_rows(t, c, opts.ignore_index, opts.weight, opts.class_weight, dtype))


def small_op():
    """The small-call operator (``torch.ops.hem_plugins_kernel.small_loss``) where the
    library registered it and is in use, else None."""
    return _SMALL if _lib is not None else None


def run(x, target, margin, opts: LossOptions, inputs) -> torch.Tensor:
    """The kernel's loss of a checked call: through the small-call operator where it takes
    the call (one range of rows, ``'mean'`` with the ``|K|`` divisor or ``'sum'``, no
    weights, no ``avg_factor``), with its autograd in C++; else, or where the values need
    the checks, through :class:`KernelFunction`, which names the problem."""
    if (
        _SMALL is not None
        and takes_small_call(
            opts.reduction, opts.p, opts.divisor[0], opts.weight, opts.class_weight, opts.avg_factor
        )
        and x.numel() <= chunked.CHUNK_ELEMS
    ):
        table = margin if isinstance(margin, torch.Tensor) else None
        try:
            return _SMALL(
                x,
                target,
                table,
                0.0 if table is not None else float(margin),
                opts.ignore_index,
                opts.mask_value,
                opts.reduction == "sum",
            )
        except RuntimeError as err:
            if _NEEDS_CHECKS not in str(err):
                raise
    return KernelFunction.apply(x, target, margin, opts, inputs)


class KernelFunction(torch.autograd.Function):
    """HEM (``p = 1``) on the CPU through the compiled kernel; same values as the other
    implementations.

    Between forward and backward it keeps one byte buffer, the safe targets in
    the narrowest integer type followed by the kept mask packed 8 entries a
    byte (the kernel's layout), and the row weights if any; never the logits.
    A small input (one range of rows) costs two foreign calls (both forward
    passes, the backward) and three allocations (that buffer, the loss, the
    gradient); at the size of an MLP's batch the Python around them is most of
    the call, so it is kept short.
    """

    @staticmethod
    def forward(ctx, x, target, margin, opts: LossOptions, inputs):
        shape = x.shape
        if len(shape) == 2:
            n, c = shape
            s, x3, ss = 1, x, 1
            sn, sc = x.stride()
        else:  # a view where the strides allow one, else a copy: read x3, not x
            n, c = shape[0], shape[1]
            s = num_positions(shape)
            x3 = x.reshape(n, c, s)
            sn, sc, ss = x3.stride()
        rows = n * s
        x_dtype = x.dtype
        dtype = compute_dtype(x_dtype)
        ignore_index, reduction, mask_value = opts.ignore_index, opts.reduction, opts.mask_value
        weight, class_weight, avg_factor = opts.weight, opts.class_weight, opts.avg_factor
        mode = opts.divisor
        t = target
        if t.dtype != torch.int64 or not t.is_contiguous():
            t = t.to(torch.int64).contiguous()
        w = None if weight is None else _as(weight, dtype)
        cw = None if class_weight is None else _as(class_weight, dtype)
        mc = margin_table(margin, dtype, _CPU)  # the kernel picks margin[t_j] per row
        if isinstance(mc, float):
            mu, mc_ptr = mc, None
        else:
            mu, mc_ptr = 0.0, mc.data_ptr()
        has_mv, mv = (0, 0.0) if mask_value is None else (1, mask_value)
        x_ptr = x3.data_ptr()
        tail = (t.data_ptr(), ignore_index, _ptr(w), _ptr(cw), mu, mc_ptr)
        ranges = [(0, rows)] if rows * c <= chunked.CHUNK_ELEMS else _ranges(rows, c, s)
        if c <= 255:
            tdtype, tbytes = torch.uint8, rows
        else:
            tdtype = chunked.small_int_dtype(c)
            tbytes = rows * (2 if tdtype == torch.int16 else 4)
        # The safe targets, then the mask (zeroed by pass 2): one buffer, one allocation.
        saved = torch.empty(tbytes + (rows * c + 7) // 8, dtype=torch.uint8)
        tc_ptr = saved.data_ptr()
        mask_ptr = tc_ptr + tbytes
        if w is None and cw is None:
            rw = rw_ptr = None
        else:
            rw = torch.empty(rows, dtype=dtype)
            rw_ptr = rw.data_ptr()
        if reduction == "none":
            row_sum = torch.empty(rows, dtype=dtype)
            ptrs = (mask_ptr, tc_ptr, rw_ptr, row_sum.data_ptr())
        else:
            ptrs = (mask_ptr, tc_ptr, rw_ptr, None)
        if len(ranges) == 1:  # both passes in one call; the checks follow
            out = _OUT6()
            _FORWARD[x_dtype, tdtype](
                x_ptr, sn, sc, ss, c, s, 0, rows, *tail, has_mv, mv, *ptrs, out
            )
            total, count, bad = out[0], out[1], out[2]
            nonfinite = out[3] or not math.isfinite(total)  # entry.resolve_nonfinite
            kept_sum, kept_count = out[4], out[5]
        else:
            args = (x_ptr, sn, sc, ss, c, s)
            p1 = _PASS1[x_dtype]

            def pass1(j0, j1):
                out = _OUT4()
                p1(*args, j0, j1, *tail, has_mv, mv, out)
                return out

            outs = _run(pass1, ranges)
            total = _sum_outs(outs, 0)
            count = _sum_outs(outs, 1)
            bad = any(o[2] for o in outs)
            nonfinite = any(o[3] for o in outs) or not math.isfinite(total)
        if bad or nonfinite or inputs:
            flags = [bad, nonfinite]
            if inputs:
                flags += [bool(v) for v in torch.stack([f for f, _, _ in inputs]).tolist()]
            if any(flags):
                raise_for_values(
                    flags, x, target, ignore_index, c, [(name, v) for _, name, v in inputs]
                )
        if len(ranges) > 1:
            ebar = total / (count if count > 1.0 else 1.0)
            p2 = _PASS2[x_dtype, tdtype]

            def pass2(j0, j1):
                out = _OUT2()
                p2(*args, j0, j1, *tail, ebar, *ptrs, out)
                return out

            outs = _run(pass2, ranges)
            kept_sum, kept_count = _sum_outs(outs, 0), _sum_outs(outs, 1)
        div = None
        if reduction == "mean":
            if avg_factor is None and mode[0] == "kept":  # divisor(), its common case inline
                div = kept_count if kept_count > 1.0 else 1.0
            else:
                n_rows = None
                if mode[0] != "kept" and avg_factor is None:
                    n_rows = _num_valid(count, c, t, opts, dtype)
                div = divisor(avg_factor, kept_count, dtype, mode, n_rows)
            loss = torch.full((), kept_sum / div, dtype=dtype)
        elif reduction == "sum":
            loss = torch.full((), kept_sum, dtype=dtype)
        else:
            loss = row_sum.reshape(target.shape)
        ctx.meta = (div, reduction, x_dtype, dtype, tuple(shape), c, s, ranges, rows, tdtype)
        if rw is None:
            ctx.save_for_backward(saved)
        else:
            ctx.save_for_backward(saved, rw)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: differentiating twice raises
            return _backward_once(ctx, grad_out)
        return _backward(ctx, grad_out)


def _backward(ctx, grad_out):
    """The gradient from the saved mask (grad mode off, the common case: no wrapper)."""
    div, reduction, x_dtype, dtype, x_shape, c, s, ranges, rows, tdtype = ctx.meta
    saved = ctx.saved_tensors
    rw = saved[1] if len(saved) > 1 else None
    tc_ptr = saved[0].data_ptr()
    if reduction == "none" or rw is not None:  # one coefficient per row
        g = grad_out.to(dtype) if reduction == "none" else grad_out.item()
        coef_rows = backward_coef(
            g, reduction, div, rw.view(-1, 1, 1) if rw is not None else None, rows
        )
        coef_rows = coef_rows.to(dtype).reshape(-1).contiguous()
        coef = 0.0
    elif reduction == "mean":  # backward_coef, its common case inline
        coef, coef_rows = grad_out.item() / div, None
    else:
        coef, coef_rows = grad_out.item(), None
    grad = torch.empty(x_shape, dtype=x_dtype)
    fn = _GRAD[x_dtype, tdtype]
    mask_ptr = tc_ptr + rows * (1 if tdtype == torch.uint8 else 2 if tdtype == torch.int16 else 4)
    head = (mask_ptr, tc_ptr, c, s)
    tail = (coef, _ptr(coef_rows), None, grad.data_ptr())  # row weights are in coef_rows
    if len(ranges) == 1:
        fn(*head, 0, ranges[0][1], *tail)
    else:
        _run(lambda j0, j1: fn(*head, j0, j1, *tail), ranges)
    return grad, None, None, None, None


_backward_once = once_differentiable(_backward)


class _Context:
    """What :meth:`KernelFunction.forward` and :func:`_backward` use of an autograd ``ctx``."""

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors


def loss_and_grad(x, target, margin, opts: LossOptions, inputs) -> tuple:
    """The loss of a checked call and the gradient of ``loss.sum()`` with respect to ``x``,
    from the kernel's forward and backward with no autograd graph (the registered
    operator's path, :mod:`.registered_op`). Raises what the forward raises."""
    ctx = _Context()
    loss = KernelFunction.forward(ctx, x, target, margin, opts, inputs)
    return loss, _backward(ctx, torch.ones_like(loss))[0]
