"""One row of the per-shape table: time ratio, saved bytes, peak memory, bandwidth; the profiler view."""

from __future__ import annotations

import statistics

import torch

from .cases import dtype_name, loss_fns, make_inputs, shape_name
from .memory import peak_bytes
from .timing import saved_bytes, timed, timed_copy


def bench_shape(shape, device, dtype, repeats, peak=True) -> dict:
    """Forward+backward of CE and the ``HEMLoss`` module on the same logits, interleaved.

    Times are medians; ``time_ratio`` is the median of the per-pair ratios
    HEM/CE. The bandwidth counts the bytes any loss must move (read the logits
    once, write their gradient once), beside a plain copy of the logits.
    """
    logits, target = make_inputs(shape, device, dtype)
    fns = loss_fns(shape, device)
    ce, hem = fns["ce"], fns["hem"]
    for fn in (ce, hem):  # warm-up
        timed(fn, logits, target, device)
    timed_copy(logits, device)
    times = {"ce": [], "hem": [], "copy": []}
    for r in range(repeats):
        for key in ("ce", "hem") if r % 2 == 0 else ("hem", "ce"):
            times[key].append(timed(fns[key], logits, target, device))
        times["copy"].append(timed_copy(logits, device))
    ratios = [h / c for h, c in zip(times["hem"], times["ce"], strict=True)]
    ce_saved = saved_bytes(ce, logits, target)
    hem_saved = saved_bytes(hem, logits, target)
    nbytes = logits.numel() * logits.element_size()
    moved = 2 * nbytes
    ce_s, hem_s, copy_s = (statistics.median(times[k]) for k in ("ce", "hem", "copy"))
    del logits, target
    ce_peak = peak_bytes("ce", shape, device, dtype) if peak else None
    hem_peak = peak_bytes("hem", shape, device, dtype) if peak else None
    return {
        "shape": shape_name(shape),
        "device": str(device),
        "dtype": dtype_name(dtype),
        "repeats": repeats,
        "ce_ms": 1e3 * ce_s,
        "hem_ms": 1e3 * hem_s,
        "time_ratio": statistics.median(ratios),
        "ce_saved_bytes": ce_saved,
        "hem_saved_bytes": hem_saved,
        "saved_ratio": hem_saved / ce_saved,
        "logits_bytes": nbytes,
        "ce_peak_bytes": ce_peak,
        "hem_peak_bytes": hem_peak,
        "peak_ratio": None if not peak else hem_peak / max(ce_peak, 1),
        "copy_ms": 1e3 * copy_s,
        "copy_gbps": moved / copy_s / 1e9,
        "ce_gbps": moved / ce_s / 1e9,
        "hem_gbps": moved / hem_s / 1e9,
        "threads": torch.get_num_threads(),
    }


def print_profile(shape, device, dtype) -> None:
    """Where the time of one forward+backward goes, op by op (torch.profiler), for each loss form.

    Runs single-threaded: the profiler records the ops of the calling thread, and
    with more threads the chunks of the chunked torch ops and of the C++ kernel run on
    worker threads.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    logits, target = make_inputs(shape, device, dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    calls = max(1, min(100, 2_000_000 // logits.numel()))  # averages over many small calls
    for name, fn in loss_fns(shape, device).items():
        timed(fn, logits, target, device)  # warm-up
        with profile(activities=activities) as prof:
            for _ in range(calls):
                timed(fn, logits, target, device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        label = "HEMLoss" if name == "hem" else name
        print(f"{label} {shape_name(shape)} {device} {dtype} ({calls} calls)")
        print(prof.key_averages().table(sort_by=sort, row_limit=12))
