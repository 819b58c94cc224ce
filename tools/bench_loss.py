#!/usr/bin/env python
"""Time and memory of ``hem_loss`` against cross-entropy, in one process.

For each shape, forward+backward of ``torch.nn.functional.cross_entropy`` and
of ``hem_plugins.hem_loss`` on the same logits and targets run interleaved
(CE, HEM, HEM, CE, ...), and the table reports the median of the per-pair time
ratios HEM/CE and the bytes each keeps between forward and backward (counted
with ``torch.autograd.graph.saved_tensors_hooks``: every distinct storage a
backward node saves). It also reports each loss's peak memory during
forward+backward above what was allocated before (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the growth of the peak resident set
of a fresh subprocess that runs just that loss), and its effective bandwidth:
the bytes any loss must move (read the logits once, write their gradient
once) per second, beside a plain copy of the logits (read once, write once),
the machine's practical limit. ``--e2e CONFIG`` adds one mmseg training
iteration (forward, backward, optimizer step) with the config's decode loss
against CE. The results are also written as JSON.

    python tools/bench_loss.py                    # CPU, default shapes
    python tools/bench_loss.py --device cuda --out benchmarks/bench_loss_cuda.json
    python tools/bench_loss.py --shapes 2x19x64x64 --e2e configs/mmseg/X.py --e2e-size 128x128
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hem_plugins import functional, hem_loss, margin_for_dataset

_FAST_PATH_CHOICES = {"auto": "auto", "on": True, "off": False}
_FAST_PATH_ARG = "auto"  # passed on to the peak-memory subprocesses

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


def timed_copy(logits, device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = logits.detach()
    sync()
    start = time.perf_counter()
    x.clone()
    sync()
    return time.perf_counter() - start


def loss_fns(shape):
    margin = margin_for_dataset(2975 if len(shape) > 2 else 50_000)

    def ce(x, t):
        return F.cross_entropy(x, t, ignore_index=IGNORE)

    def hem(x, t):
        return hem_loss(x, t, margin, ignore_index=IGNORE)

    return {"ce": ce, "hem": hem}


def peak_bytes(name, shape, device, dtype) -> int:
    """Peak memory of one forward+backward above what the inputs (and a warm-up) left allocated."""
    if device.type == "cuda":
        logits, target = make_inputs(shape, device, dtype)
        fn = loss_fns(shape)[name]
        timed(fn, logits, target, device)  # warm-up: kernels compiled, gradient freed
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(logits, target).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: torch has no allocator statistics; a fresh process's peak RSS is exact enough at MBs.
    cmd = [sys.executable, __file__, "--peak-of", name, "--dtype", str(dtype).split(".")[1]]
    cmd += ["--fast-path", _FAST_PATH_ARG]
    cmd += ["--shapes", "x".join(map(str, shape))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def _peak_child(name, shape, dtype) -> None:
    """Run in a subprocess by peak_bytes: prints the peak RSS growth of one forward+backward."""
    device = torch.device("cpu")
    logits, target = make_inputs(shape, device, dtype)
    fn = loss_fns(shape)[name]
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


def bench_shape(shape, device, dtype, repeats, peak=True):
    logits, target = make_inputs(shape, device, dtype)
    fns = loss_fns(shape)
    ce, hem = fns["ce"], fns["hem"]

    for fn in (ce, hem):  # warm-up
        timed(fn, logits, target, device)
    timed_copy(logits, device)
    ce_times, hem_times, copy_times = [], [], []
    for r in range(repeats):
        order = (ce, hem) if r % 2 == 0 else (hem, ce)
        for fn in order:
            (ce_times if fn is ce else hem_times).append(timed(fn, logits, target, device))
        copy_times.append(timed_copy(logits, device))
    ratios = [h / c for h, c in zip(hem_times, ce_times, strict=True)]
    ce_saved = saved_bytes(ce, logits, target)
    hem_saved = saved_bytes(hem, logits, target)
    nbytes = logits.numel() * logits.element_size()
    moved = 2 * nbytes  # read the logits once, write their gradient once (a copy: read + write)
    ce_s, hem_s, copy_s = (statistics.median(v) for v in (ce_times, hem_times, copy_times))
    del logits, target
    ce_peak = peak_bytes("ce", shape, device, dtype) if peak else None
    hem_peak = peak_bytes("hem", shape, device, dtype) if peak else None
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
    """Where the time of one forward+backward goes, op by op (torch.profiler).

    Runs single-threaded: the profiler records the ops of the calling thread, and
    with more threads the fast path's chunk ops run on its worker threads.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    logits, target = make_inputs(shape, device, dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    calls = max(1, min(100, 2_000_000 // logits.numel()))  # averages over many small calls
    for name, fn in loss_fns(shape).items():
        timed(fn, logits, target, device)  # warm-up
        with profile(activities=activities) as prof:
            for _ in range(calls):
                timed(fn, logits, target, device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"{name} {'x'.join(map(str, shape))} {device} {dtype}")
        print(prof.key_averages().table(sort_by=sort, row_limit=12))


def _mb(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def print_table(rows, e2e=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title="hem_loss vs cross_entropy, forward+backward (median of interleaved runs)")
    cols = ["shape", "device", "dtype", "CE ms", "HEM ms", "time HEM/CE", "CE saved MB"]
    cols += ["HEM saved MB", "saved HEM/CE", "CE peak MB", "HEM peak MB", "peak HEM/CE"]
    cols += ["CE GB/s", "HEM GB/s", "copy GB/s"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["shape"],
            r["device"],
            r["dtype"],
            f"{r['ce_ms']:.1f}",
            f"{r['hem_ms']:.1f}",
            f"{r['time_ratio']:.2f}",
            _mb(r["ce_saved_bytes"]),
            _mb(r["hem_saved_bytes"]),
            f"{r['saved_ratio']:.2f}",
            _mb(r["ce_peak_bytes"]),
            _mb(r["hem_peak_bytes"]),
            "-" if r["peak_ratio"] is None else f"{r['peak_ratio']:.2f}",
            f"{r['ce_gbps']:.1f}",
            f"{r['hem_gbps']:.1f}",
            f"{r['copy_gbps']:.1f}",
        )
    console.print(table)
    if e2e:
        t = Table(title=f"one training iteration of {e2e['config']} (median of interleaved runs)")
        for col in ("input", "decode loss", "its ms", "CE ms", "time ratio"):
            t.add_column(col, justify="right")
        t.add_row(
            e2e["input"],
            e2e["loss"],
            f"{e2e['loss_ms']:.0f}",
            f"{e2e['ce_ms']:.0f}",
            f"{e2e['time_ratio']:.2f}",
        )
        console.print(t)


def _as_list(cfg) -> list:
    return [] if cfg is None else list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]


def _swap_syncbn(cfg):
    """SyncBN needs a process group; a single CPU process uses BN."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for v in cfg.values():
            _swap_syncbn(v)
    elif isinstance(cfg, list):
        for v in cfg:
            _swap_syncbn(v)


def _register_bench_hem(MODELS) -> str:
    """A minimal mmseg loss around ``hem_loss`` (for configs whose decode loss is CE)."""
    name = "BenchHEMLoss"
    if MODELS.get(name) is not None:
        return name

    class BenchHEMLoss(torch.nn.Module):
        def __init__(self, margin=None, loss_weight=1.0):
            super().__init__()
            self.margin = margin_for_dataset(2975) if margin is None else margin
            self.loss_weight = loss_weight

        def forward(self, cls_score, label, weight=None, ignore_index=255, **kwargs):
            return self.loss_weight * hem_loss(
                cls_score, label, self.margin, ignore_index=ignore_index, weight=weight
            )

        @property
        def loss_name(self):
            return "loss_hem"

    MODELS.register_module(name=name, module=BenchHEMLoss)
    return name


def bench_e2e(
    config: str, size: tuple[int, int] | None, batch: int, repeats: int, device=None
) -> dict:
    """One training iteration (forward, backward, SGD step) with the decode loss as given vs CE.

    The CE variant sets every head's loss (decode and auxiliary) to CE with the
    same total weight, so that only the loss under test differs.
    """
    import copy

    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    name = config
    if config.startswith("mmseg::"):  # a config shipped inside the mmseg wheel
        import mmseg

        config = str(Path(mmseg.__file__).parent / ".mim" / "configs" / config[len("mmseg::") :])
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)
    _swap_syncbn(model_cfg)
    model_cfg["pretrained"] = None
    if "backbone" in model_cfg:
        model_cfg["backbone"].pop("init_cfg", None)
    if size is None:
        size = tuple(cfg.get("crop_size") or model_cfg["data_preprocessor"].get("size"))
    model_cfg["data_preprocessor"]["size"] = tuple(size)
    head = model_cfg["decode_head"]
    num_classes = head["num_classes"]
    given = head["loss_decode"]
    given_type = given["type"] if isinstance(given, dict) else "+".join(d["type"] for d in given)
    ce_cfg = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
    if given_type == "CrossEntropyLoss":  # nothing to compare: HEM through a minimal wrapper
        given = dict(type=_register_bench_hem(MODELS))
        given_type = given["type"]
    gen = torch.Generator().manual_seed(0)
    h, w = size
    data = {
        "inputs": [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)] * batch,
        "data_samples": [
            SegDataSample(
                gt_sem_seg=PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=gen)),
                metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)),
            )
            for _ in range(batch)
        ],
    }
    models = {}
    for key in ("loss", "ce"):
        mc = copy.deepcopy(model_cfg)
        if key == "loss":
            mc["decode_head"]["loss_decode"] = given
        else:  # every head's loss becomes CE (an auxiliary head may use the loss under test too)
            heads = [mc["decode_head"]] + _as_list(mc.get("auxiliary_head"))
            for head_cfg in heads:
                losses = _as_list(head_cfg["loss_decode"])
                weight = sum(d.get("loss_weight", 1.0) for d in losses)
                head_cfg["loss_decode"] = dict(ce_cfg, loss_weight=weight)
        torch.manual_seed(0)
        model = MODELS.build(mc)
        if device is not None:
            model.to(device)
        model.train()
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
        models[key] = (model, optim)

    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None

    def step(key) -> float:
        model, optim = models[key]
        if sync:
            sync()
        start = time.perf_counter()
        model.train_step(copy.copy(data), optim)
        if sync:
            sync()
        return time.perf_counter() - start

    step("loss"), step("ce")  # warm-up
    times = {"loss": [], "ce": []}
    for r in range(repeats):
        for key in ("loss", "ce") if r % 2 == 0 else ("ce", "loss"):
            times[key].append(step(key))
    ratios = [a / b for a, b in zip(times["loss"], times["ce"], strict=True)]
    return {
        "config": name,
        "input": f"{batch}x3x{h}x{w}",
        "loss": given_type,
        "loss_ms": 1e3 * statistics.median(times["loss"]),
        "ce_ms": 1e3 * statistics.median(times["ce"]),
        "time_ratio": statistics.median(ratios),
        "repeats": repeats,
    }


SMALL_SHAPES = [
    "32x10",
    "128x10",
    "256x100",
    "4096x1000",
    "2x19x256x512",
    "4x150x64x64",
    "2x19x512x1024",
    "8x150x128x128",
]
SMALL_BF16_SHAPES = ["2x19x512x1024", "8x150x128x128"]


def _fastest(samples: dict[str, list[float]]) -> dict[str, float]:
    return {k: min(v) for k, v in samples.items()}


def _interleaved(
    fns: dict, budget_s: float, min_samples: int, max_samples: int, sync, prepare=None
) -> dict:
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


def mlp_step_suite(device, budget_s: float) -> list[dict]:
    """Training step of an MLP 64-256-256-10 (SGD with momentum) at batch 32, CE vs HEM forms."""
    import copy
    import warnings

    from hem_plugins import HEMLoss, HEMPlusLoss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, generator=gen).to(device)
    t = torch.randint(0, 10, (32,), generator=gen).to(device)
    torch.manual_seed(0)
    base = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).to(device)
    criteria = {
        "CE": torch.nn.CrossEntropyLoss(),
        "HEMLoss(margin)": HEMLoss(margin=margin_for_dataset(50_000)),
        "HEMPlusLoss(class_counts)": HEMPlusLoss(class_counts=[5000 + 100 * i for i in range(10)]),
        "HEMPlusLoss() online": HEMPlusLoss(num_samples=50_000),
    }
    steps_per_sample = 20

    initial = copy.deepcopy(base.state_dict())

    def make_step(crit):
        model = copy.deepcopy(base)
        crit = crit.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def reset():  # untimed: every sample trains from the same weights (no divergence)
            model.load_state_dict(initial)
            opt.state.clear()

        def run():
            for _ in range(steps_per_sample):
                opt.zero_grad()
                crit(model(x), t).backward()
                opt.step()

        return reset, run

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the online form warns once
        steps = {name: make_step(crit) for name, crit in criteria.items()}
        fns = {name: run for name, (_, run) in steps.items()}
        resets = {name: reset for name, (reset, _) in steps.items()}
        samples = _interleaved(fns, budget_s, 10, 2000, sync, resets)
    best = _fastest(samples)
    return [
        {
            "case": f"MLP 64-256-256-10 step, batch 32, {name}",
            "criterion": name,
            "ce_us": 1e6 * best["CE"] / steps_per_sample,
            "hem_us": 1e6 * best[name] / steps_per_sample,
            "ratio": best[name] / best["CE"],
            "samples": len(samples[name]),
        }
        for name in criteria
        if name != "CE"
    ]


def loss_suite(shape, device, dtype, budget_s: float) -> dict:
    """Forward+backward of CE, ``hem_loss`` and ``HEMLoss`` on the same logits, interleaved."""
    from hem_plugins import HEMLoss

    logits, target = make_inputs(shape, device, dtype)
    fns = loss_fns(shape)
    margin = margin_for_dataset(2975 if len(shape) > 2 else 50_000)
    module = HEMLoss(margin=margin, ignore_index=IGNORE).to(device)
    numel = logits.numel()
    reps = max(1, min(200, 2_000_000 // max(numel, 1)))  # calls per sample: ~1 ms at least

    def call(fn):
        def run():
            for _ in range(reps):
                fn(logits, target).backward()
                logits.grad = None

        return run

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    forms = {"CE": fns["ce"], "hem_loss": fns["hem"], "HEMLoss": module}
    samples = _interleaved({k: call(f) for k, f in forms.items()}, budget_s, 5, 5000, sync)
    best = _fastest(samples)
    ce_saved = saved_bytes(fns["ce"], logits, target)
    hem_saved = saved_bytes(module, logits, target)
    return {
        "case": f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')}",
        "shape": "x".join(map(str, shape)),
        "dtype": str(dtype).replace("torch.", ""),
        "ce_ms": 1e3 * best["CE"] / reps,
        "hem_loss_ms": 1e3 * best["hem_loss"] / reps,
        "HEMLoss_ms": 1e3 * best["HEMLoss"] / reps,
        "ratio_functional": best["hem_loss"] / best["CE"],
        "ratio": best["HEMLoss"] / best["CE"],
        "saved_ratio": hem_saved / ce_saved,
        "samples": len(samples["CE"]),
    }


def small_suite(device, budget_s: float, bf16_shapes=None) -> dict:
    """The ratios of the performance issue's table: MLP steps, then loss-only at each shape."""
    steps = mlp_step_suite(device, 3 * budget_s)
    losses = [loss_suite(parse_shape(sh), device, torch.float32, budget_s) for sh in SMALL_SHAPES]
    for sh in SMALL_BF16_SHAPES if bf16_shapes is None else bf16_shapes:
        losses.append(loss_suite(parse_shape(sh), device, torch.bfloat16, budget_s))
    return {"mlp_step": steps, "loss": losses}


def print_small(result) -> None:
    print("| case | CE | HEM | HEM / CE |")
    print("|---|---|---|---|")
    for r in result["mlp_step"]:
        print(
            f"| {r['case']} | {r['ce_us']:.0f} us | {r['hem_us']:.0f} us | **{r['ratio']:.2f}** |"
        )
    print()
    print(
        "| logits | CE ms | hem_loss ms | HEMLoss ms | hem_loss / CE | HEMLoss / CE | saved HEM/CE |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in result["loss"]:
        print(
            f"| {r['case']} | {r['ce_ms']:.3f} | {r['hem_loss_ms']:.3f} | {r['HEMLoss_ms']:.3f} "
            f"| {r['ratio_functional']:.2f} | **{r['ratio']:.2f}** | {r['saved_ratio']:.2f} |"
        )


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x256, got {text!r}") from None
    return h, w


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
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--profile", action="store_true", help="print a torch.profiler table of each loss instead"
    )
    parser.add_argument(
        "--e2e",
        metavar="CONFIG",
        help="also time one mmseg training iteration of CONFIG (a path or mmseg::...) "
        "with its decode loss against CE",
    )
    parser.add_argument(
        "--e2e-size", type=parse_size, help="input HxW for --e2e (default: the crop size)"
    )
    parser.add_argument("--e2e-batch", type=int, default=2, help="batch for --e2e (default 2)")
    parser.add_argument(
        "--fast-path",
        choices=list(_FAST_PATH_CHOICES),
        default="auto",
        help="hem_loss implementation: auto (default, as users get it), on (always the "
        "chunked fast path), off (the reference path)",
    )
    parser.add_argument(
        "--suite",
        choices=["small"],
        help="small: the performance issue's table (MLP training steps at batch 32, "
        "forward+backward at 32x10 .. 8x150x128x128, bfloat16 at the last two), "
        "fastest of many interleaved runs; ignores --shapes",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=8.0,
        help="--suite: seconds of interleaved sampling per case (MLP: 3x; default 8)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads(N) first (default: torch's choice, the cores)",
    )
    parser.add_argument(
        "--bf16-all",
        action="store_true",
        help="--suite: bfloat16 at every shape (default: the two largest)",
    )
    parser.add_argument("--peak-of", choices=["ce", "hem"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=Path("work_dirs/bench_loss.json"), help="JSON output path"
    )
    args = parser.parse_args(argv)
    global _FAST_PATH_ARG
    _FAST_PATH_ARG = args.fast_path
    functional.FAST_PATH = _FAST_PATH_CHOICES[args.fast_path]
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.peak_of:
        _peak_child(args.peak_of, args.shapes[0], dtype)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but torch sees no CUDA device")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.e2e and not args.e2e.startswith("mmseg::") and not Path(args.e2e).is_file():
        parser.error(f"--e2e config {args.e2e} does not exist")
    if args.profile:
        for shape in args.shapes:
            print_profile(shape, device, dtype)
        return
    if args.suite:
        result = small_suite(device, args.budget, SMALL_SHAPES if args.bf16_all else None)
        print_small(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = _meta(device, argv)
        args.out.write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    rows = [
        bench_shape(shape, device, dtype, args.repeats, peak=not args.no_peak)
        for shape in args.shapes
    ]
    e2e = None
    if args.e2e:
        e2e = bench_e2e(args.e2e, args.e2e_size, args.e2e_batch, args.repeats, device)
    print_table(rows, e2e)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = _meta(device, argv)
    args.out.write_text(json.dumps({"meta": meta, "results": rows, "e2e": e2e}, indent=2) + "\n")
    print(f"wrote {args.out}")


def _meta(device, argv) -> dict:
    from hem_plugins import _cpu_kernel

    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": __import__("os").cpu_count(),
        "loadavg_1min": __import__("os").getloadavg()[0],
        "command": " ".join(["tools/bench_loss.py", *(argv or sys.argv[1:])]),
        "cpu_kernel": _cpu_kernel.available() or _cpu_kernel.BUILD_ERROR,
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        import triton

        meta["triton"] = triton.__version__
    return meta


if __name__ == "__main__":
    main()
