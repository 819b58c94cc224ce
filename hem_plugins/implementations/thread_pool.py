"""The thread pool that the chunked torch ops and the C++ kernel spread their chunks over.

Chunks go to ``torch.get_num_threads()`` Python threads (torch ops and ``ctypes`` calls
release the GIL), each running its torch ops on one core (``torch.set_num_threads(1)``
is per thread under OpenMP): no op enters an OpenMP region, so on a busy machine a
preempted thread delays only its own chunks, not every op of every thread at a barrier.
One pool serves the process; it is made anew when the thread count changes or after a fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def _new_pool(threads: int) -> ThreadPoolExecutor:
    """``threads`` workers whose torch ops run single-threaded; the process default is kept.

    ``torch.set_num_threads(1)`` sets the calling thread's OpenMP/MKL thread count,
    but also the default that threads started later take: each worker sets it
    once, at start, and the caller then puts the default back.
    """
    barrier = threading.Barrier(threads)

    def init() -> None:
        torch.get_num_threads()  # this thread's lazy init first, or it would undo the next line
        torch.set_num_threads(1)
        barrier.wait()  # every worker starts (and sets its count) before the default is restored

    pool = ThreadPoolExecutor(threads, thread_name_prefix="hem_plugins", initializer=init)
    list(pool.map(lambda _: None, range(threads)))
    torch.set_num_threads(threads)
    return pool


def pool(threads: int) -> ThreadPoolExecutor:
    """The shared pool of ``threads`` workers (new when the count changed, or after a fork)."""
    global _POOL, _POOL_PID
    if _POOL is None or _POOL._max_workers != threads or _POOL_PID != os.getpid():
        if _POOL is not None and _POOL_PID == os.getpid():
            _POOL.shutdown(wait=False)
        _POOL, _POOL_PID = _new_pool(threads), os.getpid()
    return _POOL


def current() -> ThreadPoolExecutor | None:
    """The pool if one was made in this process (None before the first parallel call)."""
    return _POOL if _POOL_PID == os.getpid() else None


def reset() -> None:
    """Drop the pool (its threads finish their work and end); the next parallel call makes one."""
    global _POOL
    if _POOL is not None and _POOL_PID == os.getpid():
        _POOL.shutdown(wait=False)
    _POOL = None


def for_chunks(fn: Callable, blocks: list, device: torch.device, caller_runs: bool = False) -> list:
    """``[fn(*b) for b in blocks]``, on the thread pool for CPU tensors.

    ``caller_runs`` (for ``fn`` that runs no torch op, e.g. a foreign call):
    the calling thread works through the blocks beside ``threads - 1`` pool
    workers, all taking the next block from one shared iterator, so that a
    preempted worker delays only the block it holds. Otherwise the blocks go
    to the pool in a few groups per thread, whose torch ops run single-threaded.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or len(blocks) < 2:
        return [fn(*b) for b in blocks]
    workers = pool(threads)
    if caller_runs:
        results = [None] * len(blocks)
        order = iter(range(len(blocks)))  # next() of a range iterator is atomic under the GIL

        def drain():
            for i in order:
                results[i] = fn(*blocks[i])

        futures = [workers.submit(drain) for _ in range(min(threads, len(blocks)) - 1)]
        drain()
        for f in futures:
            f.result()
        return results
    step = -(-len(blocks) // (4 * threads))  # a few tasks per thread balance a busy machine
    groups = [blocks[i : i + step] for i in range(0, len(blocks), step)]

    def run(group):
        with torch.no_grad():  # grad mode is per thread; these threads start with it on
            return [fn(*b) for b in group]

    results = workers.map(run, groups)
    return [r for group in results for r in group]
