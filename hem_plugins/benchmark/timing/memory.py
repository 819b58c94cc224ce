"""Peak memory of one forward+backward above what was allocated before it."""

from __future__ import annotations

import subprocess
import sys

import torch

from hem_plugins import implementations

from .cases import dtype_name, loss_fns, make_inputs, shape_name
from .timing import timed


def peak_bytes(name, shape, device, dtype) -> int:
    """Peak memory of loss ``name`` (``ce`` or ``hem``) above what the inputs and a warm-up left.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: torch has no allocator
    statistics; the peak resident set of a fresh ``bench_loss.py --peak-of``
    process (same ``--implementation``) is exact enough at MBs.
    """
    if device.type == "cuda":
        logits, target = make_inputs(shape, device, dtype)
        fn = loss_fns(shape, device)[name]
        timed(fn, logits, target, device)  # warm-up: kernels compiled, gradient freed
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(logits, target).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    cmd = [
        sys.executable,
        "-m",
        "hem_plugins.benchmark.timing",
        "--peak-of",
        name,
        "--dtype",
        dtype_name(dtype),
    ]
    cmd += ["--implementation", implementations.setting(), "--shapes", shape_name(shape)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def peak_child(name, shape, dtype) -> None:
    """Run in the subprocess of :func:`peak_bytes`: prints the peak RSS growth of one call."""
    device = torch.device("cpu")
    logits, target = make_inputs(shape, device, dtype)
    fn = loss_fns(shape, device)[name]
    # Warm-up at a quarter-size shape of the same kind: lazy loads, thread pools and
    # allocator arenas are set up, as in the steady state of a training loop.
    warm = list(shape)
    while warm[-1] > 1 and torch.Size(warm).numel() * 4 > torch.Size(shape).numel():
        warm[-1] //= 2
    if warm[-1] == 1 and len(warm) > 2:
        warm[0] = 1
    timed(fn, *make_inputs(tuple(warm), device, dtype), device)
    rss_now = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak RSS (VmHWM) to now
        f.write("5")
    fn(logits, target).backward()
    print(max(0, _status_kb("VmHWM") - rss_now) * 1024)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status (the CPU peak needs Linux)")
