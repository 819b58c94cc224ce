"""SkipSettledPlugin with no set-up, measured as a user adds it (``tools/skip_settled.py --plain``).

``plugins=[ExperienceMarginsPlugin(), SkipSettledPlugin()]`` on a plain
``nc_benchmark`` of scikit-learn's digits (no ``with_sample_ids``), with Naive
and Naive + ``ReplayPlugin``, against the same runs without the plugin, paired
by seed. Needs Avalanche (the ``avalanche`` extras).
"""

from __future__ import annotations

import statistics
import time

from avalanche.core import SupervisedPlugin

from ..digits import load_digits_split

__all__ = ["PLAIN", "RowCounter", "plain_comparison", "plain_digits", "plain_run", "plain_table"]

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
    """scikit-learn's digits as two plain Avalanche datasets (no ids): ``(train, test)``."""
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    x_tr, y_tr, x_te, y_te = load_digits_split(test_size, split_seed)
    return tensor_dataset(x_tr, y_tr), tensor_dataset(x_te, y_te)


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
        acc = [a["acc"] - b["acc"] for a, b in pairs]
        acc_jt = [a["acc_just_trained"] - b["acc_just_trained"] for a, b in pairs]
        result["strategies"][name] = {
            "passes_saved": statistics.fmean(saved),
            "passes_saved_min": min(saved),
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
            f"| {unidentified:.0f} |"
        )
    head = (
        f"Seeds {result['seeds']}; with minus without the plugin, mean ± standard error "
        "over the seeds, in points.\n\n"
        "| strategy | sample passes saved | final test accuracy | accuracy just after each "
        "experience | unidentified rows per run |\n|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows)


def _pm(mean: float, se: float | None) -> str:
    return f"{mean:+.1f}" if se is None else f"{mean:+.1f} ± {se:.1f}"
