"""SkipSettledPlugin with no set-up, measured as a user adds it (``tools/skip_settled.py``).

``plugins=[ExperienceMarginsPlugin(), SkipSettledPlugin()]`` on a plain ``nc_benchmark`` of
the suite's digits (:func:`.data.load_dataset`, no ``with_sample_ids``), with Naive and
Naive + ``ReplayPlugin`` training the suite's MLP (:func:`.models.build_model`, one hidden
layer, no BatchNorm), against the same runs without the plugin, paired by seed. Writes a
small JSON (default ``benchmarks/skip_settled_plain.json``, with the tree's ``provenance``:
:func:`.provenance.provenance` without tuned.json) and renders its table into a
Markdown block (``docs/skip_settled.md``)::

    python tools/skip_settled.py --seeds 0 1 2 3 4
    python tools/skip_settled.py --render benchmarks/skip_settled_plain.json --doc docs/skip_settled.md

Needs Avalanche (the ``avalanche`` extras). The benchmark task ``skip_settled``
(:mod:`.tasks.skip_settled`) measures skipping with set-up: sample ids across experiences,
a classification loop with a skip sampler, controls that train less.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from avalanche.core import SupervisedPlugin

from .data import load_dataset
from .models import build_model
from .provenance import provenance

__all__ = [
    "PLAIN",
    "RowCounter",
    "main",
    "plain_comparison",
    "plain_digits",
    "plain_run",
    "plain_table",
]

PROG = "python tools/skip_settled.py"
DEFAULT_JSON = Path("benchmarks") / "skip_settled_plain.json"

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


class RowCounter(SupervisedPlugin):
    """Rows trained on, counted the same way with and without SkipSettledPlugin."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.rows += int(strategy.mb_y.numel())


def plain_digits(test_size: float = 0.3, split_seed: int = 0):
    """The suite's digits as two plain Avalanche datasets (no ids): ``(train, test)``."""
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    split = load_dataset("digits", split_seed, {"test_size": test_size})
    return tensor_dataset(split.x_train, split.y_train), tensor_dataset(split.x_test, split.y_test)


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
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.supervised import Naive

    from hem_plugins import HEMLoss
    from hem_plugins.avalanche import ExperienceMarginsPlugin, SkipSettledPlugin

    cfg = {**PLAIN, **(cfg or {})}

    bench = nc_benchmark(
        train, test, n_experiences=cfg["n_experiences"], task_labels=False, seed=seed
    )
    torch.manual_seed(seed)
    model = build_model(torch.zeros(1, 64), 10, "mlp", (cfg["hidden"],), standardize=False,
                        norm=False)  # fmt: skip
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
        "rechecked": sum(e["rechecked"] for e in skipper.history),
        "train_seconds": seconds,
    }


def plain_comparison(seeds: list[int], epochs: int, log=print) -> dict:
    """Paired runs with and without the plugin over ``seeds``: passes saved and accuracy
    differences (points, with their standard error) per strategy, and every run."""
    train, test = plain_digits(PLAIN["test_size"], PLAIN["split_seed"])
    result: dict = {
        "settings": {**PLAIN, "epochs": epochs, "n_train": len(train), "n_test": len(test)},
        "seeds": list(seeds),
        "strategies": {},
    }
    for name, replay in (("naive", False), ("naive+replay", True)):
        runs: dict[str, list[dict]] = {"without": [], "with": []}
        for seed in seeds:
            for variant, skip in (("without", False), ("with", True)):
                r = plain_run(train, test, seed, skip, replay, epochs)
                runs[variant].append(r)
                log(f"{name} seed {seed} {variant} SkipSettledPlugin: {r}")
        pairs = list(zip(runs["with"], runs["without"], strict=True))
        saved = [1 - a["passes"] / b["passes"] for a, b in pairs]
        checked = [a["rechecked"] / b["passes"] for a, b in pairs]
        acc = [a["acc"] - b["acc"] for a, b in pairs]
        acc_jt = [a["acc_just_trained"] - b["acc_just_trained"] for a, b in pairs]
        result["strategies"][name] = {
            "passes_saved": statistics.fmean(saved),
            "passes_saved_min": min(saved),
            "forward_only": statistics.fmean(checked),
            "acc_diff_points": 100 * statistics.fmean(acc),
            "acc_diff_points_se": _se_points(acc),
            "acc_just_trained_diff_points": 100 * statistics.fmean(acc_jt),
            "acc_just_trained_diff_points_se": _se_points(acc_jt),
            "runs": runs,
        }
    return result


def _se_points(values: list[float]) -> float | None:
    return 100 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def plain_table(result: dict) -> str:
    """Markdown: per strategy, the passes saved and the paired accuracy differences."""
    rows = []
    for name, r in result["strategies"].items():
        unidentified = sum(run["unidentified"] for run in r["runs"]["with"]) / len(
            r["runs"]["with"]
        )
        rows.append(
            f"| {name} | {100 * r['passes_saved']:.1f} % (least {100 * r['passes_saved_min']:.1f} %) "
            f"| {_pm(r['acc_diff_points'], r['acc_diff_points_se'])} "
            f"| {_pm(r['acc_just_trained_diff_points'], r['acc_just_trained_diff_points_se'])} "
            f"| {100 * r.get('forward_only', 0.0):.1f} % | {unidentified:.0f} |"
        )
    head = (
        f"Seeds {result['seeds']}; with minus without the plugin, mean ± standard error "
        "over the seeds, in points.\n\n"
        "| strategy | sample passes saved | final test accuracy | accuracy just after each "
        "experience | forward-only re-checks | unidentified rows per run |\n"
        "|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows)


def _pm(mean: float, se: float | None) -> str:
    return f"{mean:+.1f}" if se is None else f"{mean:+.1f} ± {se:.1f}"


def parse_args(argv: list[str] | None = None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="paired seeds")
    p.add_argument("--epochs", type=int, default=10, help="epochs per experience")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the JSON to write")
    p.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="also fill the skip-plain block of this Markdown file (docs/skip_settled.md) "
        "from the JSON",
    )
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only fill --doc's block (default docs/skip_settled.md) from this JSON",
    )
    return p.parse_args(argv)


def render_plain(json_path: Path, doc: Path, prog: str = PROG) -> Path:
    """Fill ``doc``'s skip-plain block from a JSON that :func:`main` wrote."""
    from .report import fill_block

    result = json.loads(json_path.read_text(encoding="utf-8"))
    text = f"<!-- rendered from {json_path} by `{prog} --render {json_path} --doc {doc}` -->"
    return fill_block(doc, "skip-plain", f"{text}\n\n{plain_table(result)}\n")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the paired comparison and write its JSON (or, with ``--render``, only the table)."""
    args = parse_args(argv, prog)
    if args.render is not None:
        doc = args.doc or Path("docs/skip_settled.md")
        print(f"rendered: {render_plain(args.render, doc, prog)}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = plain_comparison(args.seeds, args.epochs, log=lambda s: print(s, flush=True))
    given = argv if argv is not None else sys.argv[1:]
    result["meta"] = {
        "command": shlex.join([*prog.split(), *given]),
        "torch": torch.__version__,
        "threads": args.threads,
        "seconds": time.perf_counter() - start,
    }
    # the tree's provenance, without configs/benchmark/tuned.json (these runs do not read it)
    result["provenance"] = provenance(with_tuned=False)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, r in result["strategies"].items():
        print(
            f"{name}: {100 * r['passes_saved']:.1f} % fewer sample passes "
            f"(min {100 * r['passes_saved_min']:.1f} %), final test accuracy "
            f"{r['acc_diff_points']:+.2f} points, just-trained accuracy "
            f"{r['acc_just_trained_diff_points']:+.2f} points (with minus without)"
        )
    if args.doc is not None:
        print(f"rendered: {render_plain(args.json, args.doc, prog)}")
    return 0
