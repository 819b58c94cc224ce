#!/usr/bin/env python
"""Time and memory of ``hem_loss`` against cross-entropy, in one process.

For each shape, forward+backward of ``torch.nn.functional.cross_entropy`` and
of ``hem_plugins.hem_loss`` on the same logits and targets run interleaved
(CE, HEM, HEM, CE, ...), and the table reports the median of the per-pair time
ratios HEM/CE and the bytes each keeps between forward and backward (counted
with ``torch.autograd.graph.saved_tensors_hooks``: every distinct storage a
backward node saves). The results are also written as JSON.

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hem_plugins import hem_loss, margin_for_dataset

DEFAULT_SHAPES = ["4096x1000", "2x19x512x1024", "8x150x128x128"]
IGNORE = 255


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 2x19x512x1024, got {text!r}"
        ) from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"shape needs N and C (and optional spatial dims), got {text!r}"
        )
    return shape


def make_inputs(shape, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, c, *spatial = shape
    logits = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    target = torch.randint(0, c, (n, *spatial), generator=gen)
    if spatial:  # segmentation-like: a few ignored pixels, as mmseg labels have
        target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE
    return logits.requires_grad_(True), target.to(device)


def saved_bytes(fn, logits, target) -> int:
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


def timed(fn, logits, target, device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn(logits, target).backward()
    sync()
    elapsed = time.perf_counter() - start
    logits.grad = None
    return elapsed


def bench_shape(shape, device, dtype, repeats):
    logits, target = make_inputs(shape, device, dtype)
    margin = margin_for_dataset(2975 if len(shape) > 2 else 50_000)

    def ce(x, t):
        return F.cross_entropy(x, t, ignore_index=IGNORE)

    def hem(x, t):
        return hem_loss(x, t, margin, ignore_index=IGNORE)

    for fn in (ce, hem):  # warm-up
        timed(fn, logits, target, device)
    ce_times, hem_times = [], []
    for r in range(repeats):
        order = (ce, hem) if r % 2 == 0 else (hem, ce)
        for fn in order:
            (ce_times if fn is ce else hem_times).append(timed(fn, logits, target, device))
    ratios = [h / c for h, c in zip(hem_times, ce_times, strict=True)]
    ce_saved = saved_bytes(ce, logits, target)
    hem_saved = saved_bytes(hem, logits, target)
    return {
        "shape": "x".join(map(str, shape)),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "repeats": repeats,
        "ce_ms": 1e3 * statistics.median(ce_times),
        "hem_ms": 1e3 * statistics.median(hem_times),
        "time_ratio": statistics.median(ratios),
        "ce_saved_bytes": ce_saved,
        "hem_saved_bytes": hem_saved,
        "saved_ratio": hem_saved / ce_saved,
        "logits_bytes": logits.numel() * logits.element_size(),
    }


def print_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hem_loss vs cross_entropy, forward+backward (median of interleaved runs)")
    for col in (
        "shape",
        "device",
        "dtype",
        "CE ms",
        "HEM ms",
        "time HEM/CE",
        "CE saved MB",
        "HEM saved MB",
        "saved HEM/CE",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["shape"],
            r["device"],
            r["dtype"],
            f"{r['ce_ms']:.1f}",
            f"{r['hem_ms']:.1f}",
            f"{r['time_ratio']:.2f}",
            f"{r['ce_saved_bytes'] / 2**20:.1f}",
            f"{r['hem_saved_bytes'] / 2**20:.1f}",
            f"{r['saved_ratio']:.2f}",
        )
    Console().print(table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument(
        "--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES]
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="interleaved runs per loss (default 7)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("work_dirs/bench_loss.json"), help="JSON output path"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but torch sees no CUDA device")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    dtype = getattr(torch, args.dtype)
    rows = [bench_shape(shape, device, dtype, args.repeats) for shape in args.shapes]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
