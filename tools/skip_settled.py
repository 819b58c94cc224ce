#!/usr/bin/env python
"""Does skipping HEM-settled samples save training? The benchmark task ``skip_settled`` alone.

A thin CLI over :mod:`hem_plugins.benchmark.tasks.skip_settled` (the measurement
code is :mod:`hem_plugins.benchmark.settled_runs`): it runs that task with the
settings of a benchmark profile (``configs/benchmark/<profile>.py``, key
``tasks.skip_settled``) and writes ``DIR/skip_settled.json`` (the task's
results, as ``results.json`` of ``tools/benchmark.py`` holds them),
``DIR/skip_settled.md`` (its report section) and ``DIR/skip_settled.png``.

    python tools/skip_settled.py --out work_dirs/skip_settled --profile quick
    python tools/skip_settled.py --out /tmp/s --profile smoke --no-continual
    python tools/skip_settled.py --render work_dirs/skip_settled/skip_settled.json

The same numbers come from ``tools/benchmark.py --profile quick --tasks skip_settled``.

``--plain`` measures instead the plugin with no set-up, as a user adds it:
``plugins=[ExperienceMarginsPlugin(), SkipSettledPlugin()]`` on a plain
``nc_benchmark`` of scikit-learn's digits (no ``with_sample_ids``), Naive and
Naive + ``ReplayPlugin``, against the same runs without it, over several seeds;
it writes a small JSON (default ``benchmarks/skip_settled_plain.json``)::

    python tools/skip_settled.py --plain --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--profile", default="quick", help="smoke, quick, full, or a .py config path")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--repeats", type=int, default=None, help="training seeds per seed")
    p.add_argument("--no-continual", action="store_true", help="leave out continual learning")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON", help="only re-render")
    p.add_argument(
        "--plain",
        action="store_true",
        help="SkipSettledPlugin() with no set-up on a plain nc_benchmark (see above)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "skip_settled_plain.json",
        help="--plain: the JSON to write",
    )
    p.add_argument("--epochs", type=int, default=10, help="--plain: epochs per experience")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- --plain
PLAIN = dict(
    n_experiences=5,
    test_size=0.3,
    split_seed=0,
    hidden=128,
    lr=0.05,
    momentum=0.9,
    batch_size=32,
    mem_size=100,
)


def plain_digits(test_size: float = 0.3, split_seed: int = 0):
    """scikit-learn's digits as two plain Avalanche datasets (no ids): ``(train, test)``."""
    import torch
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(
        list(range(len(y))), test_size=test_size, random_state=split_seed, stratify=d.target
    )
    return tensor_dataset(x[tr], y[tr]), tensor_dataset(x[te], y[te])


def plain_run(
    train,
    test,
    seed: int,
    skip: bool,
    replay: bool,
    epochs: int,
    cfg: dict | None = None,
    skip_options: dict | None = None,
) -> dict:
    """One Naive (or Naive + ReplayPlugin) run on ``nc_benchmark(train, test)``.

    HEMLoss with ``ExperienceMarginsPlugin``; with ``skip``, ``SkipSettledPlugin()``
    at its defaults (or ``skip_options``) as well. Returns the rows trained on (``passes``, counted
    the same way with and without the plugin), the final test accuracy, the
    mean accuracy on each experience's classes just after training it, the
    rows the plugin could not identify, and the training seconds.
    """
    import torch
    from avalanche.benchmarks import nc_benchmark
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.supervised import Naive

    from hem_plugins import HEMLoss
    from hem_plugins.avalanche import ExperienceMarginsPlugin, SkipSettledPlugin

    cfg = {**PLAIN, **(cfg or {})}

    class RowCounter(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.rows = 0

        def after_training_iteration(self, strategy, **kwargs):
            self.rows += int(strategy.mb_y.numel())

    bench = nc_benchmark(
        train, test, n_experiences=cfg["n_experiences"], task_labels=False, seed=seed
    )
    torch.manual_seed(seed)
    h = cfg["hidden"]
    model = torch.nn.Sequential(torch.nn.Linear(64, h), torch.nn.ReLU(), torch.nn.Linear(h, 10))
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    counter, skipper = RowCounter(), SkipSettledPlugin(**{"seed": seed, **(skip_options or {})})
    plugins = [ExperienceMarginsPlugin(), counter]
    if skip:
        plugins.append(skipper)
    if replay:
        plugins.append(ReplayPlugin(mem_size=cfg["mem_size"]))
    strategy = Naive(
        model=model,
        optimizer=opt,
        criterion=HEMLoss(),
        train_mb_size=cfg["batch_size"],
        train_epochs=epochs,
        eval_mb_size=1024,
        plugins=plugins,
        evaluator=None,
    )
    xte = torch.stack([test[i][0] for i in range(len(test))])
    yte = torch.tensor([int(t) for t in test.targets])

    @torch.no_grad()
    def predict():
        model.eval()
        pred = model(xte).argmax(1)
        model.train()
        return pred

    just_trained, seconds = [], 0.0
    for exp in bench.train_stream:
        t0 = time.perf_counter()
        strategy.train(exp)
        seconds += time.perf_counter() - t0
        mine = torch.isin(yte, torch.tensor(sorted(exp.classes_in_this_experience)))
        just_trained.append(float((predict()[mine] == yte[mine]).float().mean()))
    return {
        "passes": counter.rows,
        "acc": float((predict() == yte).float().mean()),
        "acc_just_trained": sum(just_trained) / len(just_trained),
        "unidentified": sum(e["unidentified"] for e in skipper.history),
        "train_seconds": seconds,
    }


def plain_main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """``--plain``: paired runs with and without the plugin; writes ``args.json``."""
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else [0, 1, 2, 3, 4]
    train, test = plain_digits(PLAIN["test_size"], PLAIN["split_seed"])
    start = time.perf_counter()
    result: dict = {
        "settings": {**PLAIN, "epochs": args.epochs, "n_train": len(train), "n_test": len(test)},
        "seeds": seeds,
        "strategies": {},
    }
    for name, replay in (("naive", False), ("naive+replay", True)):
        runs = {"without": [], "with": []}
        for seed in seeds:
            for variant, skip in (("without", False), ("with", True)):
                r = plain_run(train, test, seed, skip, replay, args.epochs)
                runs[variant].append(r)
                print(f"{name} seed {seed} {variant} SkipSettledPlugin: {r}", flush=True)

        def diffs(key, runs=runs):
            return [a[key] - b[key] for a, b in zip(runs["with"], runs["without"], strict=True)]

        def se(values):
            return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None

        saved = [
            1 - a["passes"] / b["passes"]
            for a, b in zip(runs["with"], runs["without"], strict=True)
        ]
        acc, acc_jt = diffs("acc"), diffs("acc_just_trained")
        result["strategies"][name] = {
            "passes_saved": statistics.fmean(saved),
            "passes_saved_min": min(saved),
            "acc_diff_points": 100 * statistics.fmean(acc),
            "acc_diff_points_se": None if se(acc) is None else 100 * se(acc),
            "acc_just_trained_diff_points": 100 * statistics.fmean(acc_jt),
            "acc_just_trained_diff_points_se": None if se(acc_jt) is None else 100 * se(acc_jt),
            "runs": runs,
        }
    result["meta"] = {
        "command": shlex.join(["python", "tools/skip_settled.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": args.threads,
        "seconds": time.perf_counter() - start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, r in result["strategies"].items():
        print(
            f"{name}: {100 * r['passes_saved']:.1f} % fewer sample passes "
            f"(min {100 * r['passes_saved_min']:.1f} %), final test accuracy "
            f"{r['acc_diff_points']:+.2f} points, just-trained accuracy "
            f"{r['acc_just_trained_diff_points']:+.2f} points (with minus without)"
        )
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.plain:
        return plain_main(args, argv)
    import torch

    from hem_plugins.benchmark.config import load_profile, task_settings
    from hem_plugins.benchmark.tasks.base import Context
    from hem_plugins.benchmark.tasks.skip_settled import TASK

    if args.render is not None:
        result = json.loads(args.render.read_text(encoding="utf-8"))
        out = args.out or args.render.parent
    else:
        if args.out is None:
            raise SystemExit("tools/skip_settled.py: --out DIR is required (or --render JSON)")
        torch.set_num_threads(args.threads)
        cfg = load_profile(args.profile)
        settings = task_settings(cfg, TASK.name)
        seeds = args.seeds if args.seeds is not None else cfg.get("seeds", [0])
        if args.repeats is not None:
            settings["repeats"] = args.repeats
        if args.no_continual:
            settings["continual"] = None
        settings["seeds"] = seeds
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = {"settings": settings, "seeds": seeds, "per_seed": {}}
        ctx = Context(work_dir=out, advance=lambda desc: print(desc, flush=True))
        for seed in seeds:
            result["per_seed"][str(seed)] = TASK.run_seed(settings, seed, ctx)
        result["meta"] = {
            "command": shlex.join(["python", "tools/skip_settled.py", *(argv or sys.argv[1:])]),
            "profile": cfg.get("profile"),
            "torch": torch.__version__,
            "threads": args.threads,
            "seconds": time.perf_counter() - start,
        }
        (out / "skip_settled.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = TASK.render(result, out)
    command = result.get("meta", {}).get("command")
    if command:
        text = text.replace("\n\n", f"\n\nCommand: `{command}`.\n\n", 1)
    (out / "skip_settled.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
