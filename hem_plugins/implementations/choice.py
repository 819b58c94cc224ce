"""Which implementation runs a call: :func:`choose`, and the one switch that overrides it.

The automatic choice (``docs/performance.md``, "Which implementation runs where"):

* CPU logits, ``p = 1``, float32, float64 or bfloat16: ``cpu_kernel``, once it built;
* CUDA logits: ``triton`` for ``p = 1`` and float32, float16 or bfloat16 logits when
  triton imports, ``chunked`` otherwise;
* other CPU logits: ``chunked`` with spatial dimensions (on a little-endian host),
  ``reference`` for ``(N, C)``.

The switch names one implementation for every call: :func:`use` inside a block, or
the environment variable :data:`ENV_VAR` (read when ``hem_plugins`` is imported) for a
whole process; ``"auto"`` is the automatic choice. A named implementation that cannot
run a call (the kernel with ``p = 2``, or one that did not build; Triton on the CPU)
raises a ``RuntimeError`` that names it and the reason; nothing falls back. Any setting
but ``"auto"`` and ``"cpu_kernel"`` leaves the C++ kernel unbuilt and unused, HEM+'s
online class counting included.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from . import chunked, cpu_kernel
from .options import LossOptions

IMPLEMENTATIONS = ("reference", "chunked", "cpu_kernel", "triton")
"""The implementations of the loss, by the names :func:`choose` returns."""

ENV_VAR = "HEM_PLUGINS_IMPLEMENTATION"
"""The environment variable of the switch: ``auto`` (default) or one of :data:`IMPLEMENTATIONS`."""

SETTINGS = ("auto", *IMPLEMENTATIONS)


def _checked(value: str, where: str) -> str:
    if value not in SETTINGS:
        raise ValueError(f"{where} must be one of {', '.join(SETTINGS)}; got {value!r}")
    return value


_setting = _checked(os.environ.get(ENV_VAR) or "auto", ENV_VAR)


def setting() -> str:
    """The switch as it stands: ``"auto"`` or the name of the implementation every call runs."""
    return _setting


@contextlib.contextmanager
def use(name: str) -> Iterator[str]:
    """Run every loss call inside the block on implementation ``name`` (or ``"auto"``).

    Process-wide (every thread), restored when the block ends, nestable. A call that
    the implementation cannot run raises ``RuntimeError``.

    Example:
        >>> import torch
        >>> from hem_plugins import hem_loss, implementations
        >>> x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> with implementations.use("reference"):
        ...     implementations.choose(x, implementations.LossOptions())
        'reference'
        >>> with implementations.use("reference"):
        ...     a = hem_loss(x, t, 0.5)
        >>> with implementations.use("chunked"):
        ...     b = hem_loss(x, t, 0.5)
        >>> torch.allclose(a, b)
        True
    """
    global _setting
    _checked(name, "implementations.use(name)")
    before, _setting = _setting, name
    try:
        yield name
    finally:
        _setting = before


_triton_backend = None
_triton_error: str | None = None


def triton_import_error() -> str | None:
    """Why the Triton kernels do not import (None: they do); tried once, on first need."""
    global _triton_backend, _triton_error
    if _triton_backend is None and _triton_error is None:
        try:
            from .triton_kernels import TritonBackend
        except ImportError as err:  # triton comes with CUDA builds of torch, but is optional
            _triton_error = f"{type(err).__name__}: {err}"
        else:
            _triton_backend = TritonBackend
    return _triton_error


def _triton_cannot_run(x: torch.Tensor, p: int) -> str | None:
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"it runs on CUDA (on the CPU only under TRITON_INTERPRET=1), got logits on {x.device}"
        )
    if p != 1:
        return f"it computes p = 1 only, got p = {p}"
    if x.dtype == torch.float64:
        return "it takes float32, float16 and bfloat16 logits, got torch.float64"
    error = triton_import_error()
    return None if error is None else f"triton does not import: {error}"


def cannot_run(name: str, logits: torch.Tensor, p: int) -> str | None:
    """Why implementation ``name`` cannot run ``logits`` with this ``p`` (None: it can)."""
    if name == "cpu_kernel":
        return cpu_kernel.cannot_run(logits, p)
    if name == "triton":
        return _triton_cannot_run(logits, p)
    if name == "chunked":
        return chunked.cannot_run(logits, p)
    if name == "reference":
        return None
    raise ValueError(f"unknown implementation {name!r}; one of {', '.join(IMPLEMENTATIONS)}")


def choose(logits: torch.Tensor, options: LossOptions) -> str:
    """The implementation that runs ``hem_loss`` on ``logits`` with ``options``.

    The one place the choice is made; it reads the logits' device, dtype and number
    of dimensions, ``options.p`` and the switch (:func:`use`, :data:`ENV_VAR`).

    Raises:
        RuntimeError: the switch names an implementation that cannot run this call.
    """
    p = options.p
    if _setting == "auto":
        if cpu_kernel.cannot_run(logits, p) is None:
            return "cpu_kernel"
        if logits.is_cuda:
            return "triton" if _triton_cannot_run(logits, p) is None else "chunked"
        if logits.dim() > 2 and chunked.LITTLE_ENDIAN:
            return "chunked"
        return "reference"
    reason = cannot_run(_setting, logits, p)
    if reason is not None:
        raise RuntimeError(
            f"the {_setting!r} implementation of hem_loss, chosen by the switch "
            f"(implementations.use or {ENV_VAR}), cannot run this call: {reason}"
        )
    return _setting


def triton_backend():
    """``triton_kernels.TritonBackend`` (import it only where :func:`choose` picked Triton)."""
    if triton_import_error() is not None:
        raise RuntimeError(f"triton does not import: {_triton_error}")
    return _triton_backend
