"""The implementations of the one loss, the choice between them, and the entry to them.

Four implementations give the same values and gradients (``docs/performance.md``):

* ``reference`` (:mod:`.reference`): whole-tensor torch ops, any device;
* ``chunked`` (:mod:`.chunked`): two passes in chunks of torch ops on a thread pool
  (:mod:`.thread_pool`), any device;
* ``cpu_kernel`` (:mod:`.cpu_kernel`, ``cpu_kernel.cpp``): the same two passes as one
  C++ function each, compiled on first use by :mod:`.native_build` (a per-user cache
  checked for owner, mode and content, built under a lock);
* ``triton`` (:mod:`.triton_kernels`): the same two passes as Triton kernels on CUDA,
  run by the autograd function of :mod:`.chunked`.

:func:`choose` (:mod:`.choice`) picks one per call. The switch overrides it: the
context manager :func:`use` or the environment variable ``HEM_PLUGINS_IMPLEMENTATION``
(``auto``, ``reference``, ``chunked``, ``cpu_kernel``, ``triton``). The public API
reaches them through :mod:`.entry`, which checks each call once; :mod:`.checks` and
:mod:`.options` hold what the implementations share.
"""

from .choice import ENV_VAR, IMPLEMENTATIONS, cannot_run, choose, setting, use
from .options import LossOptions

__all__ = [
    "ENV_VAR",
    "IMPLEMENTATIONS",
    "LossOptions",
    "cannot_run",
    "choose",
    "setting",
    "use",
]
