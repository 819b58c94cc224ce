"""The printed tables and the JSON file (``meta``, ``provenance`` and the results)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from hem_plugins import implementations
from hem_plugins.implementations import cpu_kernel

from ..provenance import provenance


def _mb(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def print_table(rows, e2e=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title="HEMLoss vs cross_entropy, forward+backward (median of interleaved runs)")
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


def print_small(result) -> None:
    print("| case | CE | HEM | HEM / CE |")
    print("|---|---|---|---|")
    for r in result["mlp_step"] + result.get("mlp_step_compiled", []):
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


def meta(device, argv) -> dict:
    """torch, threads, CPU, the command line, the implementation setting, whether the C++
    kernel is in use (and the GPU)."""

    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
        "command": " ".join(["tools/bench_loss.py", *(sys.argv[1:] if argv is None else argv)]),
        "implementation": implementations.setting(),
        "cpu_kernel": cpu_kernel.available() or cpu_kernel.BUILD_ERROR,
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
        import triton

        out["triton"] = triton.__version__
    return out


def write_json(path: Path, device, argv, results: dict) -> None:
    """``{"meta": ..., "provenance": ..., **results}`` to ``path`` (its folder created).

    ``provenance``: :func:`hem_plugins.benchmark.provenance.provenance` of the tree, without
    ``configs/benchmark/tuned.json`` (no timing reads it)."""
    data = {"meta": meta(device, argv), "provenance": provenance(with_tuned=False), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
