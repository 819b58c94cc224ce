"""The clocks: one timed call, interleaved sampling, and the bytes kept for backward."""

from __future__ import annotations

import time

import torch


def synchronizer(device: torch.device):
    """A function that waits for the device (a no-op on the CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn, logits, target, device) -> float:
    """Seconds of one forward+backward of ``fn(logits, target)``."""
    sync = synchronizer(device)
    sync()
    start = time.perf_counter()
    fn(logits, target).backward()
    sync()
    elapsed = time.perf_counter() - start
    logits.grad = None
    return elapsed


def timed_copy(logits, device) -> float:
    """Seconds of one copy of the logits (read once, write once)."""
    sync = synchronizer(device)
    x = logits.detach()
    sync()
    start = time.perf_counter()
    x.clone()
    sync()
    return time.perf_counter() - start


def saved_bytes(fn, logits, target) -> int:
    """Bytes of every distinct storage a backward node of ``fn`` saves."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(logits, target)
    loss.backward()
    logits.grad = None
    return sum(storages.values())


def interleaved(
    fns: dict, budget_s: float, min_samples: int, max_samples: int, sync, prepare=None
) -> dict[str, list[float]]:
    """Samples of each ``fn()`` (seconds), taken in rotating order until ``budget_s`` is spent.

    ``prepare[name]()``, if given, runs untimed before each sample of ``name``.
    """
    names = list(fns)
    samples = {k: [] for k in names}
    prepare = prepare or {}
    for k, fn in fns.items():  # warm-up
        if k in prepare:
            prepare[k]()
        fn()
    sync()
    start = time.perf_counter()
    r = 0
    while r < max_samples and (r < min_samples or time.perf_counter() - start < budget_s):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            if k in prepare:
                prepare[k]()
            sync()
            t0 = time.perf_counter()
            fns[k]()
            sync()
            samples[k].append(time.perf_counter() - t0)
        r += 1
    return samples


def fastest(samples: dict[str, list[float]]) -> dict[str, float]:
    return {k: min(v) for k, v in samples.items()}
