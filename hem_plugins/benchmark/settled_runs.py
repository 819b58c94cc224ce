"""Training runs that measure skipping HEM-settled samples (paper appendix B.3).

The runs of the benchmark task ``skip_settled`` (:mod:`.tasks.skip_settled`), on the
suite's data, model and training loop. Data (:func:`load_data`): the suite's ``digits``
(:func:`.data.load_dataset`, split with seed 0 as ``SplitDigits`` splits it), cut by
:func:`.data.open_set` into the known classes (default 0-5), on which the model trains,
and the held-out test samples of the other classes, the unknowns (unknown-class AUROC of
the max softmax probability, known = positive).

* :func:`classification_run`: the suite's MLP (BatchNorm, on the raw ``[0, 1]`` pixels)
  trained with HEM by :func:`.training.fit` (margin ``margin_for_dataset(n_train)``, SGD
  with momentum, cosine lr per epoch), every sample every epoch in a random order
  (``variant=None``: torch's ``RandomSampler``) or in the order of a
  :class:`~hem_plugins.skipping.SkipSettledSampler`. Per epoch: sample passes, accuracy,
  AUROC, the fraction of training samples the tracker believes settled and the fraction
  truly settled (measured on the whole training set).
* :func:`continual_run`: Avalanche ``Naive`` (with ``ReplayPlugin`` or not) on the suite's
  ``SplitDigits(n_experiences=5, fixed_class_order=0..9, sample_ids=True)``, trained on
  its first ``len(known) / 2`` experiences, with
  :class:`~hem_plugins.avalanche.SkipSettledPlugin` (``revisit_every=1`` when not
  skipping: it then only counts the passes). Reports forgetting too.

Avalanche is imported only inside :func:`continual_run`.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import RandomSampler

from ..modules import HEMLoss
from ..settled import settled_mask
from ..skipping import SettledTracker, SkipSettledSampler
from .data import Split, load_dataset, open_set
from .losses import build_loss
from .metrics import open_set_metrics
from .models import build_model
from .training import fit, validation_carve

__all__ = [
    "SettledData",
    "classification_run",
    "continual_run",
    "hold_out_validation",
    "load_data",
    "paired_diff",
    "passes_to_reach",
]

#: The loss whose settled samples are skipped.
LOSS = "hem"


@dataclass(frozen=True)
class SettledData:
    """Digits on the known classes (``split``), the unknown classes' test inputs, and how
    they were split."""

    split: Split
    unknown: torch.Tensor
    known: list[int]
    test_size: float
    split_seed: int


def load_data(known: list[int], test_size: float = 0.3, split_seed: int = 0) -> SettledData:
    """Digits as SplitDigits splits them; known-class train/test, unknown-class test."""
    if sorted(known) != list(range(len(known))) or not 2 <= len(known) < 10:
        raise ValueError(f"known_classes must be 0..k-1 with 2 <= k < 10, got {known}")
    full = load_dataset("digits", split_seed, {"test_size": test_size})
    split, unknown = open_set(full, known)
    return SettledData(split, unknown, list(known), test_size, split_seed)


def hold_out_validation(
    data: SettledData, fraction: float, seed: int
) -> tuple[SettledData, tuple[torch.Tensor, torch.Tensor]]:
    """``data`` with its training set less a stratified validation carve, and the carve
    ``(x, y)``: where :func:`classification_run`'s lr is chosen."""
    part, x_val, y_val = validation_carve(data.split, fraction, seed)
    return replace(data, split=part), (x_val, y_val)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: SettledData, margin: float) -> dict[str, float]:
    """Known-class test accuracy, unknown-class AUROC (MSP), truly settled training fraction."""
    was_training = model.training
    model.eval()
    split = data.split
    logits = model(split.x_test)
    acc = float((logits.argmax(1) == split.y_test).float().mean())
    auroc = open_set_metrics(logits, model(data.unknown))["auroc_msp"]
    settled = settled_mask(model(split.x_train), split.y_train, margin)
    model.train(was_training)
    return {"acc": acc, "auroc": auroc, "true_settled": float(settled.float().mean())}


def classification_run(
    data: SettledData,
    cfg: dict,
    seed: int,
    variant: tuple[int, float] | None,
    epochs: int,
) -> dict[str, Any]:
    """One HEM training run; ``variant``: None (full) or ``(revisit_every, revisit_prob)``.

    ``cfg``: ``batch_size``, ``lr``, ``momentum``, ``hidden``. Training seconds cover the
    training loop only (not the per-epoch evaluation).
    """
    split = data.split
    n = split.n_train
    tracker = SettledTracker(n)
    # The loss as fit builds it: its margins (float32) decide what the tracker counts settled.
    hem, margin = build_loss(LOSS, split.class_counts())
    if variant is None:
        sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(seed))

        def track(idx: torch.Tensor, logits: torch.Tensor) -> None:
            # full training needs no mask; only count the passes
            tracker.update(idx, torch.zeros(idx.numel(), dtype=torch.bool))

    else:
        sampler = SkipSettledSampler(
            tracker, revisit_every=int(variant[0]), revisit_prob=float(variant[1]), seed=seed
        )

        def track(idx: torch.Tensor, logits: torch.Tensor) -> None:
            tracker.observe(idx, logits, split.y_train[idx], hem.margins)

    def after_epoch(model: torch.nn.Module) -> dict:
        return {
            "passes": int(tracker.passes.sum()),
            "tracked_settled": tracker.fraction_settled,
            **evaluate(model, data, margin),
        }

    train_cfg = {"epochs": epochs, "batch_size": cfg["batch_size"], "lr": cfg["lr"],
                 "momentum": cfg.get("momentum", 0.9), "weight_decay": 0.0,
                 "schedule": "cosine_epochs"}  # fmt: skip
    model_cfg = {"kind": "mlp", "hidden": (cfg["hidden"], cfg["hidden"]), "standardize": False}
    model, hist = fit(split, LOSS, seed, train_cfg, model_cfg, {}, epoch_eval=after_epoch,
                      sampler=sampler, on_batch=track)  # fmt: skip
    curve, train_time = [], 0.0
    for epoch, (point, seconds) in enumerate(
        zip(hist["eval"], hist["epoch_seconds"], strict=False)
    ):
        train_time += seconds
        curve.append({"epoch": epoch, "passes": point["passes"], "train_seconds": train_time,
                      **{k: v for k, v in point.items() if k != "passes"}})  # fmt: skip
    final = curve[-1] if curve else evaluate(model, data, margin)
    with torch.no_grad():
        train_acc = float((model(split.x_train).argmax(1) == split.y_train).float().mean())
    return {
        "model": model,
        "train_acc": train_acc,
        "epochs": epochs,
        "n_train": n,
        "margin": margin,
        "passes": int(tracker.passes.sum()),
        "train_seconds": sum(hist["epoch_seconds"]),
        "acc": final["acc"],
        "auroc": final["auroc"],
        "curve": curve,
    }


def continual_run(
    data: SettledData,
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

    from ..avalanche.skip_settled import SkipSettledPlugin
    from .avalanche.benchmarks import SplitDigits

    known = data.known
    if len(known) % 2:
        raise ValueError(f"continual learning needs an even number of known classes: {known}")
    bench = SplitDigits(
        n_experiences=5,
        seed=data.split_seed,
        test_size=data.test_size,
        fixed_class_order=list(range(10)),
        sample_ids=True,
    )
    stream = list(bench.train_stream)[: len(known) // 2]
    epochs, mem = int(cfg["epochs"]), int(cfg["mem_size"])
    # The suite's MLP on the raw pixels, without BatchNorm: Avalanche's replay loader can
    # hand over one-sample batches.
    torch.manual_seed(seed)
    model = build_model(torch.zeros(1, 64), len(known), "mlp", (cfg["hidden"], cfg["hidden"]),
                        standardize=False, norm=False)  # fmt: skip
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
    xte, yte = data.split.x_test, data.split.y_test
    exp_classes = [torch.tensor(sorted(e.classes_in_this_experience)) for e in stream]

    @torch.no_grad()
    def per_exp_acc() -> list[float]:
        model.eval()
        pred = model(xte).argmax(1)
        model.train()
        return [float((pred[torch.isin(yte, c)] == yte[torch.isin(yte, c)]).float().mean())
                for c in exp_classes]  # fmt: skip

    @torch.no_grad()
    def exp_train_acc(classes: torch.Tensor) -> float:
        """Accuracy on the training samples of one experience (its classes)."""
        xtr, ytr = data.split.x_train, data.split.y_train
        keep = torch.isin(ytr, classes)
        model.eval()
        pred = model(xtr[keep]).argmax(1)
        model.train()
        return float((pred == ytr[keep]).float().mean())

    just_trained, fitted, train_time, seen = [], [], 0.0, 0
    for i, exp in enumerate(stream):
        n_exp = len(exp.dataset)
        crit.set_num_samples(n_exp + (min(mem, seen) if replay else 0))
        seen += n_exp
        t0 = time.perf_counter()
        strategy.train(exp)
        train_time += time.perf_counter() - t0
        just_trained.append(per_exp_acc()[i])
        fitted.append(exp_train_acc(exp_classes[i]))
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
        # the health gate's train acc: each experience's training accuracy just after
        # training it, averaged (what a run that learned every experience reaches)
        "train_acc": statistics.fmean(fitted),
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
    """Mean paired difference (same seed) and its 95 % t-interval, the suite's verdict rule
    (:func:`..protocol.paired_interval`).

    ``within_noise``: the interval holds 0 (the protocol's "no difference measured"). With
    one seed there is no interval: ``within_noise`` is None.
    """
    from .protocol import paired_interval

    d_n = sum(
        1 for a, b in zip(values, reference, strict=True) if not (math.isnan(a) or math.isnan(b))
    )
    mean, lo, hi = paired_interval(values, reference)
    if d_n < 2:
        return {"mean": mean, "lo": lo, "hi": hi, "n": d_n, "within_noise": None}
    return {"mean": mean, "lo": lo, "hi": hi, "n": d_n, "within_noise": bool(lo <= 0.0 <= hi)}
