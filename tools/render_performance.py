#!/usr/bin/env python
"""Render docs/performance.md's CPU figures from the committed timing JSONs.

    python tools/render_performance.py            # fill the blocks of docs/performance.md
    python tools/render_performance.py --check    # exit 1 (and print the diff) if they differ

Each ``<!-- perf:NAME:start -->`` ... ``<!-- perf:NAME:end -->`` block of the page is
rewritten from the JSONs that ``tools/bench_loss.py`` wrote under ``benchmarks/`` (the
command above each table in the page); nothing between the markers is typed by hand. The
blocks (:data:`BLOCKS`) and the JSONs each reads:

- ``kept``: the ranges of the saved and peak ratios (small suite, large inputs);
- ``small-tables``: the MLP-step and logits tables (``bench_loss_small_cpu.json``,
  ``bench_loss_small_cpu_1thread.json``);
- ``small-runs``: the threads, cores and load averages of those two runs;
- ``large``: the memory and time table of ``bench_loss_cpu.json`` and
  ``bench_loss_cpu_bfloat16.json``, and their threads and repeats;
- ``e2e``: the mmseg iteration table of ``bench_e2e_digitmosaic_cpu.json`` and
  ``bench_e2e_fcn_r18_cpu.json``, and their repeats and threads;
- ``small-call``: the fixed cost of a small call (the 2-thread small suite).

Only the standard library: it runs without torch. ``tests/tools/test_render_performance.py``
checks that the committed page is the rendering of the committed JSONs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
BENCHMARKS = ROOT / "benchmarks"

SMALL = "bench_loss_small_cpu.json"
SMALL_1T = "bench_loss_small_cpu_1thread.json"
LARGE = ("bench_loss_cpu.json", "bench_loss_cpu_bfloat16.json")
#: The e2e JSONs in the table's order, with the name the page gives each model.
E2E = {"bench_e2e_digitmosaic_cpu.json": "DigitMosaic", "bench_e2e_fcn_r18_cpu.json": "FCN-R18"}

_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


class RenderError(Exception):
    """A JSON or a block the page needs is missing or does not hold what the page shows."""


def _load(bench_dir: Path, name: str) -> dict:
    path = bench_dir / name
    if not path.is_file():
        raise RenderError(
            f"{_shown(path)} does not exist: docs/performance.md's figures are rendered from "
            f"it; write it with the command above its table in docs/performance.md"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RenderError(f"{_shown(path)} is not valid JSON: {err}") from None


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _field(data: dict, name: str, *keys: str):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise RenderError(f"{name} has no {'.'.join(keys)}")
        data = data[key]
    return data


def _time(ms: float) -> str:
    """``38 us`` below a millisecond, ``3.6 ms`` from one on."""
    return f"{ms * 1000:.0f} us" if ms < 1 else f"{ms:.1f} ms"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _word(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _span(values: list[float], fmt: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _one_or_each(values: list, fmt: Callable[[object], str] = str) -> str:
    """``"2"`` when all runs agree, else ``"2 and 1"``."""
    if len(set(values)) == 1:
        return fmt(values[0])
    return _and([fmt(v) for v in values])


def _paired(rows2: list[dict], rows1: list[dict], key: str, names: tuple[str, str]) -> list:
    """The rows of the two small runs side by side, matched by ``key``."""
    one = {r[key]: r for r in rows1}
    if [r[key] for r in rows2] != [r[key] for r in rows1]:
        raise RenderError(
            f"{names[0]} and {names[1]} time different cases: "
            f"{[r[key] for r in rows2]} against {[r[key] for r in rows1]}"
        )
    return [(r, one[r[key]]) for r in rows2]


def _note(names: list[str], bench_dir: Path) -> str:
    shown = _and([_shown(bench_dir / n) for n in names])
    return (
        f"<!-- rendered from {shown} by `python tools/render_performance.py`; edit the "
        "JSONs' runs, not this block -->\n\n"
    )


def small_tables(j: dict[str, dict]) -> str:
    two, one = j[SMALL], j[SMALL_1T]
    t2 = _threads(_field(two, SMALL, "meta", "threads"))
    t1 = _threads(_field(one, SMALL_1T, "meta", "threads"))
    names = (SMALL, SMALL_1T)
    lines = [
        f"| case | CE, {t2} | HEM, {t2} | HEM / CE, {t2} | HEM / CE, {t1} |",
        "|---|---|---|---|---|",
    ]
    mlp = _paired(_field(two, SMALL, "mlp_step"), _field(one, SMALL_1T, "mlp_step"), "criterion",
                  names)  # fmt: skip
    for r, r1 in mlp:
        lines.append(
            f"| MLP step, `{r['criterion']}` | {r['ce_us']:.0f} us | {r['hem_us']:.0f} us "
            f"| **{r['ratio']:.2f}** | {r1['ratio']:.2f} |"
        )
    compiled = _paired(_field(two, SMALL, "mlp_step_compiled"),
                       _field(one, SMALL_1T, "mlp_step_compiled"), "criterion", names)  # fmt: skip
    for r, r1 in compiled:
        lines.append(
            f"| MLP step compiled, `{r['criterion']}` | {r['ce_us']:.0f} us "
            f"| {r['hem_us']:.0f} us | **{r['ratio']:.2f}** | {r1['ratio']:.2f} |"
        )
    lines += [
        "",
        f"| logits | CE, {t2} | `HEMLoss`, {t2} | `HEMLoss` / CE, {t2} | `hem_loss` / CE, {t2} "
        f"| `HEMLoss` / CE, {t1} | saved HEM / CE |",
        "|---|---|---|---|---|---|---|",
    ]
    loss = _paired(_field(two, SMALL, "loss"), _field(one, SMALL_1T, "loss"), "case", names)
    for r, r1 in loss:
        lines.append(
            f"| {r['case']} | {_time(r['ce_ms'])} | {_time(r['HEMLoss_ms'])} "
            f"| **{r['ratio']:.2f}** | {r['ratio_functional']:.2f} | {r1['ratio']:.2f} "
            f"| {r['saved_ratio']:.3f} |"
        )
    return "\n".join(lines)


def small_runs(j: dict[str, dict]) -> str:
    two, one = j[SMALL], j[SMALL_1T]
    t1 = _field(one, SMALL_1T, "meta", "threads")
    cpus = [_field(d, n, "meta", "cpus") for n, d in ((SMALL, two), (SMALL_1T, one))]
    load = [_field(d, n, "meta", "loadavg_1min") for n, d in ((SMALL, two), (SMALL_1T, one))]
    machine = (
        f"The machine has {_word(cpus[0])}\ncores"
        if cpus[0] == cpus[1]
        else f"The machines have {_word(cpus[0])} and {_word(cpus[1])}\ncores"
    )
    return (
        f"The {t1}-thread column is the second command's run. {machine}; the 1-minute load "
        "average when each run finished, its own threads\nincluded, is in each JSON's `meta` "
        f"({load[0]:.2f} and {load[1]:.2f} for these runs)."
    )


def large(j: dict[str, dict]) -> str:
    lines = [
        "| logits | dtype | saved MB, CE / HEM | saved HEM / CE | peak MB, CE / HEM "
        "| peak HEM / CE | time HEM / CE (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    repeats, threads = [], []
    for name in LARGE:
        threads.append(_field(j[name], name, "meta", "threads"))
        for r in _field(j[name], name, "results"):
            repeats.append(r["repeats"])
            peak = "-" if r["peak_ratio"] is None else f"{r['peak_ratio']:.2f}"
            lines.append(
                f"| {r['shape']} | {r['dtype']} | {_mb(r['ce_saved_bytes'])} / "
                f"{_mb(r['hem_saved_bytes'])} | {r['saved_ratio']:.3f} | "
                f"{_mb(r['ce_peak_bytes'])} / {_mb(r['hem_peak_bytes'])} | {peak} "
                f"| {r['time_ratio']:.2f} |"
            )
    used = (
        f"Both runs used {_threads(threads[0])}."
        if len(set(threads)) == 1
        else f"The runs used {_and([str(t) for t in threads])} threads."
    )
    text = f"""{used} *Saved* counts every storage a backward node keeps
(`torch.autograd.graph.saved_tensors_hooks`). *Peak* is the memory one
forward+backward adds above what was allocated before it: on the CPU the
growth of the peak resident set of a fresh process that runs just that loss,
on CUDA `torch.cuda.max_memory_allocated`. *GB/s* counts the bytes any loss
must move (read the logits once, write their gradient once) per second,
beside a plain copy of the logits; the JSON files hold it with the median
times of each loss. *Time* is the median of the per-pair ratios of {_one_or_each(repeats)}
interleaved forward+backward runs of `HEMLoss` and CE; the suite table above
gives the fastest samples at the float32 shapes."""
    return "\n".join(lines) + "\n\n" + text


def _heads(loss_classes: dict[str, str]) -> str:
    """``decode: `HEMPlusLoss`, auxiliary: `CrossEntropyLoss``` from ``e2e.loss_classes``."""
    parts = []
    for key, cls in loss_classes.items():
        head = key.split(".")[0].removesuffix("_head")
        parts.append(f"{head}: `{cls.rsplit('.', 1)[-1]}`")
    return ", ".join(parts)


def e2e(j: dict[str, dict]) -> str:
    lines = [
        "| config | input | HEM model's losses | HEM iteration | CE iteration | HEM / CE |",
        "|---|---|---|---|---|---|",
    ]
    runs, threads = [], []
    for name, label in E2E.items():
        e = _field(j[name], name, "e2e")
        if not e:
            raise RenderError(f"{name} holds no e2e iteration (its command lacks --e2e)")
        threads.append(_field(j[name], name, "meta", "threads"))
        runs.append(f"{e['repeats']} ({label})")
        lines.append(
            f"| `{e['config']}` | {e['input'].replace('x', ' x ')} | {_heads(e['loss_classes'])} "
            f"| {e['loss_ms']:.0f} ms | {e['ce_ms']:.0f} ms | **{e['time_ratio']:.2f}** |"
        )
    text = (
        "One iteration is forward, backward and an SGD step of the whole model, the\n"
        f"median of {_and(runs)} interleaved runs on "
        f"{_one_or_each(threads, _threads)}."
    )
    return "\n".join(lines) + "\n\n" + text


def kept(j: dict[str, dict]) -> str:
    rows = _field(j[SMALL], SMALL, "loss") + [
        r for name in LARGE for r in _field(j[name], name, "results")
    ]
    saved = _span([r["saved_ratio"] for r in rows], ".2f")
    peaks = [r["peak_ratio"] for n in LARGE for r in j[n]["results"] if r["peak_ratio"] is not None]
    if not peaks:
        raise RenderError(f"{' and '.join(LARGE)} hold no peak memory (run without --no-peak)")
    return f"""The reference implementation keeps a byte mask and int64 targets. The
measured bytes, HEM / CE, are in the `saved` columns below: {saved} at the
shapes measured. The memory one forward+backward adds at its peak is
{_span(peaks, ".2f")} of CE's at the large shapes below."""


def small_call(j: dict[str, dict]) -> str:
    data = j[SMALL]
    threads = _field(data, SMALL, "meta", "threads")
    first = _field(data, SMALL, "loss")[0]
    mlp = _field(data, SMALL, "mlp_step")
    diffs = [r["hem_us"] - r["ce_us"] for r in mlp]
    lo, hi = format(min(diffs), "+.0f"), format(max(diffs), "+.0f")
    more = lo if lo == hi else f"{lo} to {hi}"
    ce_step = sum(r["ce_us"] for r in mlp) / len(mlp)
    loss = data["loss"]
    faster = [i for i in range(len(loss)) if all(r["ratio"] < 1 for r in loss[i:])]
    if faster:
        suite = (
            f"In the suite table, from {loss[faster[0]]['case']}\nlogits on, the loss's own "
            "passes make up its cost and HEM takes less time\nthan CE."
        )
    else:
        below = [r["case"] for r in loss if r["ratio"] < 1]
        suite = "In the suite table, HEM takes less time than CE " + (
            f"only at {_and(below)}." if below else "at no shape."
        )
    return f"""This fixed cost is what the small cases of the suite measure: {_time(first["HEMLoss_ms"])} per
forward+backward of `HEMLoss` at {first["shape"]} against {_time(first["ce_ms"])} for CE, and {more} us
against CE per MLP training step of about {round(ce_step, -1):.0f} us (the {threads}-thread table; online
HEM+ counting adds one more foreign call and the new margins tensor). The `HEMLoss` module
takes the same operator as the function: its margin is validated when set and kept as a
Python float (HEM+'s margins as a tensor on the loss's device). {suite}"""


#: Each block: the JSONs it reads and the function that renders it from them.
BLOCKS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, dict]], str]]] = {
    "kept": ((SMALL, *LARGE), kept),
    "small-tables": ((SMALL, SMALL_1T), small_tables),
    "small-runs": ((SMALL, SMALL_1T), small_runs),
    "large": (LARGE, large),
    "e2e": (tuple(E2E), e2e),
    "small-call": ((SMALL,), small_call),
}


def render(doc: str, bench_dir: Path = BENCHMARKS) -> str:
    """``doc`` (the text of docs/performance.md) with every block rendered from the JSONs of
    ``bench_dir``. Raises :class:`RenderError` naming a missing JSON, field or block."""
    cache: dict[str, dict] = {}
    for name, (files, fn) in BLOCKS.items():
        start, end = f"<!-- perf:{name}:start -->", f"<!-- perf:{name}:end -->"
        if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
            raise RenderError(f"the page has no single {start} ... {end} block to fill")
        for f in files:
            if f not in cache:
                cache[f] = _load(bench_dir, f)
        try:
            body = fn(cache)
        except (KeyError, TypeError, IndexError) as err:
            raise RenderError(f"{_and(list(files))}: a field of block {name} is missing or "
                              f"malformed ({type(err).__name__}: {err})") from None  # fmt: skip
        head, rest = doc.split(start, 1)
        _, tail = rest.split(end, 1)
        doc = f"{head}{start}\n{_note(list(files), bench_dir)}{body}\n\n{end}{tail}"
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python tools/render_performance.py",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--doc", type=Path, default=DOC, help="the page (default docs/performance.md)")
    p.add_argument(
        "--benchmarks",
        type=Path,
        default=BENCHMARKS,
        help="the JSONs' folder (default benchmarks/)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print the difference if the page is not the rendering",
    )
    args = p.parse_args(argv)
    old = args.doc.read_text(encoding="utf-8")
    try:
        new = render(old, args.benchmarks)
    except RenderError as err:
        print(f"render_performance: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            print(f"{args.doc} is the rendering of the JSONs")
            return 0
        diff = difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True),
            f"{args.doc} (committed)", f"{args.doc} (rendered)",
        )  # fmt: skip
        sys.stdout.writelines(diff)
        print(f"\n{args.doc} differs from the rendering of the JSONs: run "
              "`python tools/render_performance.py`")  # fmt: skip
        return 1
    if new != old:
        args.doc.write_text(new, encoding="utf-8")
    print(f"rendered: {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
