"""Training runs that measure skipping HEM-settled samples (paper appendix B.3).

The measurement behind the benchmark task ``skip_settled``
(:mod:`hem_plugins.benchmark.tasks.skip_settled`) and its CLI
``tools/skip_settled.py``. Data: scikit-learn's digits split as the project's
``SplitDigits`` splits them (stratified over all 10 classes, ``test_size``,
split seed 0); the model trains on the known classes (default 0-5) and the
held-out test samples of the other classes are the unknowns (unknown-class
AUROC of the max softmax probability, ``sklearn.metrics.roc_auc_score``, known
= positive).

* :func:`classification_run`: an MLP trained with HEM (margin
  ``margin_for_dataset(n_train)``, SGD with momentum, cosine lr per epoch),
  every sample every epoch (``variant=None``) or through
  :class:`~hem_plugins.skipping.SkipSettledSampler`. Per epoch: sample passes,
  accuracy, AUROC, the fraction of training samples the tracker believes
  settled and the fraction truly settled (measured on the whole training set).
* :func:`continual_run`: Avalanche ``Naive`` (with ``ReplayPlugin`` or not) on
  ``SplitDigits(n_experiences=5, fixed_class_order=0..9, sample_ids=True)``,
  trained on its first ``len(known) / 2`` experiences, with
  :class:`~hem_plugins.avalanche.SkipSettledPlugin` (``revisit_every=1``
  when not skipping: it then only counts the passes). Reports forgetting too.

Avalanche is imported only inside :func:`continual_run`.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch
from torch.utils.data import RandomSampler

from ..digits import load_digits_split
from ..margins import margin_for_dataset
from ..modules import HEMLoss
from ..settled import settled_mask
from ..skipping import SettledTracker, SkipSettledSampler
from .metrics import open_set_metrics
from .models import build_model
from .training import train_epoch

__all__ = [
    "classification_run",
    "continual_run",
    "hold_out_validation",
    "load_data",
    "paired_diff",
    "passes_to_reach",
]


def load_data(known: list[int], test_size: float = 0.3, split_seed: int = 0) -> dict:
    """Digits as SplitDigits splits them; known-class train/test, unknown-class test."""
    if sorted(known) != list(range(len(known))) or not 2 <= len(known) < 10:
        raise ValueError(f"known_classes must be 0..k-1 with 2 <= k < 10, got {known}")
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size, split_seed)
    k = torch.tensor(known)
    tr, te = torch.isin(y_tr, k), torch.isin(y_te, k)
    return {
        "known": list(known),
        "test_size": test_size,
        "split_seed": split_seed,
        "train": (x_tr[tr], y_tr[tr]),
        "test": (x_te[te], y_te[te]),
        "unknown": x_te[~te],
    }


def make_model(hidden: int, n_out: int, seed: int, norm: bool = True) -> torch.nn.Module:
    """The suite's MLP (:func:`~hem_plugins.benchmark.models.build_model`) on the raw
    ``[0, 1]`` pixels: 64-hidden-hidden-n_out, BatchNorm before each ReLU when ``norm``."""
    torch.manual_seed(seed)
    return build_model(torch.zeros(1, 64), n_out, "mlp", (hidden, hidden),
                       standardize=False, norm=norm)  # fmt: skip


def hold_out_validation(data: dict, fraction: float, seed: int) -> tuple[dict, tuple]:
    """``data`` with its training set less a stratified validation carve, and the carve
    ``(x, y)``: where :func:`classification_run`'s lr is chosen."""
    from .protocol import carve_validation

    x, y = data["train"]
    tr, val = carve_validation(y, fraction, seed)
    return {**data, "train": (x[tr], y[tr])}, (x[val], y[val])


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, margin: float) -> dict[str, float]:
    """Known-class test accuracy, unknown-class AUROC (MSP), truly settled training fraction."""
    was_training = model.training
    model.eval()
    xte, yte = data["test"]
    logits = model(xte)
    acc = float((logits.argmax(1) == yte).float().mean())
    auroc = open_set_metrics(logits, model(data["unknown"]))["auroc_msp"]
    xtr, ytr = data["train"]
    settled = settled_mask(model(xtr), ytr, margin)
    model.train(was_training)
    return {"acc": acc, "auroc": auroc, "true_settled": float(settled.float().mean())}


def classification_run(
    data: dict,
    cfg: dict,
    seed: int,
    variant: tuple[int, float] | None,
    epochs: int,
) -> dict[str, Any]:
    """One HEM training run; ``variant``: None (full) or ``(revisit_every, revisit_prob)``.

    ``cfg``: ``batch_size``, ``lr``, ``momentum``, ``hidden``. Training seconds
    cover the training loop only (not the per-epoch evaluation).
    """
    xtr, ytr = data["train"]
    n = len(ytr)
    margin = margin_for_dataset(n)
    model = make_model(cfg["hidden"], len(data["known"]), seed)
    crit = HEMLoss(margin=margin)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.9))
    tracker = SettledTracker(n)
    gen = torch.Generator().manual_seed(seed)
    if variant is None:
        sampler = RandomSampler(range(n), generator=gen)
    else:
        sampler = SkipSettledSampler(
            tracker, revisit_every=int(variant[0]), revisit_prob=float(variant[1]), seed=seed
        )

    def track(idx: torch.Tensor, logits: torch.Tensor) -> None:
        if variant is None:  # full training needs no mask; only count the passes
            tracker.update(idx, torch.zeros(idx.numel(), dtype=torch.bool))
        else:
            tracker.observe(idx, logits, ytr[idx], crit.margins)

    curve, train_time = [], 0.0
    for epoch in range(epochs):
        lr = 0.5 * cfg["lr"] * (1 + math.cos(math.pi * epoch / epochs))  # cosine, per epoch
        for group in opt.param_groups:
            group["lr"] = lr
        tracker.epoch = epoch
        t0 = time.perf_counter()
        order = torch.tensor(list(sampler), dtype=torch.long)  # the sampler's epoch, as indices
        train_epoch(model, crit, opt, xtr, ytr, order, cfg["batch_size"], on_batch=track)
        train_time += time.perf_counter() - t0
        ev = evaluate(model, data, margin)
        curve.append(
            {
                "epoch": epoch,
                "passes": int(tracker.passes.sum()),
                "train_seconds": train_time,
                "tracked_settled": tracker.fraction_settled,
                **ev,
            }
        )
    model.eval()
    with torch.no_grad():
        train_acc = float((model(xtr).argmax(1) == ytr).float().mean())
    return {
        "model": model,
        "train_acc": train_acc,
        "epochs": epochs,
        "n_train": n,
        "margin": margin,
        "passes": int(tracker.passes.sum()),
        "train_seconds": train_time,
        "acc": curve[-1]["acc"],
        "auroc": curve[-1]["auroc"],
        "curve": curve,
    }


def continual_run(
    data: dict,
    cfg: dict,
    seed: int,
    replay: bool,
    skip: tuple[int, float, bool] | None,
) -> dict[str, Any]:
    """Naive or Replay on SplitDigits' first experiences, with or without skipping.

    ``skip``: None (every sample; the plugin only counts passes) or
    ``(revisit_every, revisit_prob, skip_replayed)``. ``cfg``: ``epochs`` per
    experience, ``lr``, ``momentum``, ``batch_size``, ``hidden``, ``mem_size``.
    HEMLoss's margin is set from each experience's training rows (data + buffer).
    Forgetting: accuracy on an experience's classes just after training it
    minus at the end, averaged over all but the last experience.
    """
    from avalanche.training.plugins import LRSchedulerPlugin, ReplayPlugin
    from avalanche.training.supervised import Naive

    from ..avalanche.benchmarks import SplitDigits
    from ..avalanche.skip_settled import SkipSettledPlugin

    known = data["known"]
    if len(known) % 2:
        raise ValueError(f"continual learning needs an even number of known classes: {known}")
    bench = SplitDigits(
        n_experiences=5,
        seed=data["split_seed"],
        test_size=data["test_size"],
        fixed_class_order=list(range(10)),
        sample_ids=True,
    )
    stream = list(bench.train_stream)[: len(known) // 2]
    epochs, mem = int(cfg["epochs"]), int(cfg["mem_size"])
    # No BatchNorm here: Avalanche's replay loader can hand over one-sample batches.
    model = make_model(cfg["hidden"], len(known), seed, norm=False)
    crit = HEMLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    revisit, prob, buffer_too = skip if skip else (1, 0.0, False)
    counter = SkipSettledPlugin(
        revisit_every=revisit, revisit_prob=prob, skip_replayed=buffer_too, seed=seed
    )
    plugins = [LRSchedulerPlugin(sched), counter]
    if replay:
        plugins.append(ReplayPlugin(mem_size=mem))
    torch.manual_seed(seed)
    strategy = Naive(
        model=model,
        optimizer=opt,
        criterion=crit,
        train_mb_size=cfg["batch_size"],
        train_epochs=epochs,
        eval_mb_size=512,
        plugins=plugins,
        evaluator=None,
    )
    xte, yte = data["test"]
    exp_classes = [torch.tensor(sorted(e.classes_in_this_experience)) for e in stream]

    @torch.no_grad()
    def per_exp_acc() -> list[float]:
        model.eval()
        pred = model(xte).argmax(1)
        model.train()
        return [float((pred[torch.isin(yte, c)] == yte[torch.isin(yte, c)]).float().mean())
                for c in exp_classes]  # fmt: skip

    just_trained, train_time, seen = [], 0.0, 0
    for i, exp in enumerate(stream):
        n_exp = len(exp.dataset)
        crit.set_num_samples(n_exp + (min(mem, seen) if replay else 0))
        seen += n_exp
        t0 = time.perf_counter()
        strategy.train(exp)
        train_time += time.perf_counter() - t0
        just_trained.append(per_exp_acc()[i])
    final = per_exp_acc()
    ev = evaluate(model, data, float(crit.margins))
    return {
        "passes": int(counter.tracker.passes.sum()),
        "train_seconds": train_time,
        "acc": ev["acc"],
        "auroc": ev["auroc"],
        "forgetting": statistics.fmean(
            j - f for j, f in zip(just_trained[:-1], final[:-1], strict=True)
        ),
        "final_per_experience": final,
        "history": counter.history,
    }


def passes_to_reach(curve: list[dict], target: float) -> tuple[int, float] | None:
    """Sample passes and training seconds when test accuracy first reached ``target``.

    None when the run never reached it (accuracy is measured after each epoch).
    """
    for point in curve:
        if point["acc"] >= target - 1e-9:
            return point["passes"], point["train_seconds"]
    return None


def paired_diff(values: list[float], reference: list[float]) -> dict[str, Any]:
    """Mean paired difference (same seed), its standard error, and whether it is within noise.

    Within noise: ``|mean| <= 2 * standard error`` (about a 95 % interval). With
    one seed there is no standard error: ``within_noise`` is None.
    """
    d = [a - b for a, b in zip(values, reference, strict=True)]
    if not d:
        return {"mean": float("nan"), "se": float("nan"), "within_noise": None}
    mean = statistics.fmean(d)
    if len(d) < 2:
        return {"mean": mean, "se": float("nan"), "within_noise": None}
    se = statistics.stdev(d) / math.sqrt(len(d))
    return {"mean": mean, "se": se, "within_noise": abs(mean) <= 2 * se + 1e-12}
