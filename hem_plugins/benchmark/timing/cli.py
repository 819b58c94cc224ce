"""Time and memory of the HEM losses against cross-entropy, in one process.

For each shape, forward+backward of ``torch.nn.functional.cross_entropy`` and
of the ``hem_plugins.HEMLoss`` module on the same logits and targets run
interleaved (CE, HEM, HEM, CE, ...); the table reports the median of the
per-pair time ratios HEM/CE, the bytes each keeps between forward and backward
(``torch.autograd.graph.saved_tensors_hooks``), each loss's peak memory during
forward+backward (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the peak
resident set of a fresh subprocess) and its effective bandwidth beside a plain
copy of the logits. ``--e2e CONFIG`` adds one mmseg training iteration
(forward, backward, optimizer step) with the config's decode loss as mmseg's
registry builds it, against CE. ``--suite small`` times MLP training steps and
loss-only calls at many shapes instead. The results are also written as JSON.
The parts are the modules of this package; ``tools/bench_loss.py`` is its command line.

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
    python tools/bench_loss.py --shapes 2x19x64x64 --e2e configs/mmseg/X.py --e2e-size 128x128
    python tools/bench_loss.py --suite small --out benchmarks/bench_loss_small_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from pathlib import Path

import torch

from hem_plugins import implementations

from .cases import (
    DEFAULT_SHAPES,
    SMALL_BF16_SHAPES,
    SMALL_SHAPES,
    parse_shape,
    parse_size,
)
from .e2e import bench_e2e
from .memory import peak_child
from .report import print_small, print_table, write_json
from .shapes import bench_shape, print_profile
from .suite import small_suite

__all__ = ["main", "parse_args"]


def parse_args(argv=None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument(
        "--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES]
    )
    p.add_argument("--repeats", type=int, default=7, help="interleaved runs per loss (default 7)")
    p.add_argument("--no-peak", action="store_true", help="skip the peak-memory runs")
    p.add_argument(
        "--profile", action="store_true", help="print a torch.profiler table of each loss instead"
    )
    p.add_argument(
        "--e2e",
        metavar="CONFIG",
        help="also time one mmseg training iteration of CONFIG (a path or mmseg::...) "
        "with its decode loss against CE",
    )
    p.add_argument("--e2e-size", type=parse_size, help="input HxW for --e2e (default: crop size)")
    p.add_argument("--e2e-batch", type=int, default=2, help="batch for --e2e (default 2)")
    p.add_argument(
        "--e2e-loss",
        choices=["HEMPlusLoss", "HEMLoss"],
        default="HEMPlusLoss",
        help="--e2e: the decode loss that replaces a config's cross-entropy (default HEMPlusLoss)",
    )
    p.add_argument(
        "--implementation",
        choices=["auto", *implementations.IMPLEMENTATIONS],
        default="auto",
        help="the implementation of hem_loss during this run (hem_plugins.implementations.use): "
        "auto (default, the automatic choice users get) or one by name",
    )
    p.add_argument(
        "--suite",
        choices=["small"],
        help="small: MLP training steps at batch 32, forward+backward at 32x10 .. "
        "8x150x128x128, bfloat16 at the last two; fastest of many interleaved runs; "
        "ignores --shapes",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=8.0,
        help="--suite: seconds of interleaved sampling per case (MLP: 3x; default 8)",
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N) first (default: cores)")
    p.add_argument(
        "--bf16-all", action="store_true", help="--suite: bfloat16 at every shape (default: two)"
    )
    p.add_argument("--peak-of", choices=["ce", "hem"], help=argparse.SUPPRESS)
    p.add_argument(
        "--out", type=Path, default=Path("work_dirs/bench_loss.json"), help="JSON output path"
    )
    return p, p.parse_args(argv)


def main(argv=None) -> None:
    parser, args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but torch sees no CUDA device")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.e2e and not args.e2e.startswith("mmseg::") and not Path(args.e2e).is_file():
        parser.error(f"--e2e config {args.e2e} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    # The toolkits' warnings (mmseg's deprecations, ...) go to a log beside the JSON; the
    # terminal keeps the tables.
    if args.peak_of:  # the peak-memory child: its one line of output is read by the parent
        with implementations.use(args.implementation):
            return run(args, device, argv)
    log_path = args.out.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        with warnings.catch_warnings(), implementations.use(args.implementation):
            warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: log.write(
                warnings.formatwarning(msg, cat, fn, ln, line)
            )
            run(args, device, argv)
    print(f"third-party messages: {log_path}")


def run(args, device, argv) -> None:
    dtype = getattr(torch, args.dtype)
    if args.peak_of:
        peak_child(args.peak_of, args.shapes[0], dtype)
    elif args.profile:
        for shape in args.shapes:
            print_profile(shape, device, dtype)
    elif args.suite:
        bf16 = SMALL_SHAPES if args.bf16_all else SMALL_BF16_SHAPES
        result = small_suite(device, args.budget, SMALL_SHAPES, bf16)
        print_small(result)
        write_json(args.out, device, argv, result)
    else:
        rows = [bench_shape(s, device, dtype, args.repeats, not args.no_peak) for s in args.shapes]
        e2e = None
        if args.e2e:
            size, batch = args.e2e_size, args.e2e_batch
            e2e = bench_e2e(args.e2e, size, batch, args.repeats, device, args.e2e_loss)
        print_table(rows, e2e)
        write_json(args.out, device, argv, {"results": rows, "e2e": e2e})


if __name__ == "__main__":
    main()
