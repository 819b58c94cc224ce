#!/usr/bin/env python
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
The code is :mod:`hem_plugins.benchmark.timing`; this file is its command line.

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
    python tools/bench_loss.py --shapes 2x19x64x64 --e2e configs/mmseg/X.py --e2e-size 128x128
    python tools/bench_loss.py --suite small --out benchmarks/bench_loss_small_cpu.json
"""

from hem_plugins.benchmark.timing.cli import main

if __name__ == "__main__":
    main()
