"""DigitMosaic segmentation runs through mmseg, shared by 3e (``segmentation``) and
``adaptive_margins``.

A run trains one shipped config (``configs/mmseg/fcn-r18tiny_digitmosaic_<loss>.py``)
through :func:`hem_plugins.benchmark.mmseg.runner.fit` with the profile's iteration count
(:func:`schedule_options`) on the training part of a carve of DigitMosaic's 400 training
images (:func:`carve_options`); its lr is chosen by mIoU on the carve's validation
images (:func:`select_and_train`); the kept model is evaluated with mmseg's ``IoUMetric``
on the 100 ``val`` images (the test set) and on its own training part
(:func:`final_metrics`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..protocol import grid_for, grid_points, select, selection_key

DATASET = "digitmosaic"
#: mmseg IoUMetric on the test images, percent.
METRICS = ("mIoU", "mAcc", "aAcc")
#: IoUMetric's metric on the training part that ``train_acc`` reports (as a fraction).
FIT_METRIC = "mAcc"
#: The selection score: mIoU (percent) on the validation split carved from the training images.
SELECTION_METRIC = "val mIoU %"
_RUN_IDS = itertools.count()


def schedule_options(
    iters: int,
    seed: int,
    lr: float | None = None,
    keep_checkpoint: bool = False,
    optimizer: dict | None = None,
    val_points: int = 1,
) -> dict:
    """``cfg_options`` that shorten the CPU schedule of ``configs/mmseg/_base_/schedule_cpu.py``.

    ``PolyLR``'s ``end`` is fixed when the config is parsed, so it is overridden
    with ``max_iters`` (else a short run would stop at a high lr); ``val_points``
    validations spread over the run, the last at the end (the training curve); with
    ``optimizer`` (e.g. ``dict(type="AdamW", weight_decay=1e-4)``) the config's optimizer
    is replaced by that one; no checkpoint (the metrics come from the model in memory), or with
    ``keep_checkpoint`` one at the end, ``iter_<iters>.pth`` in the run's work dir;
    in-process data loading (no worker start-up); only mmengine's warnings on the
    console.
    """
    checkpoint = (
        {"default_hooks.checkpoint.interval": iters, "default_hooks.checkpoint.save_last": False}
        if keep_checkpoint
        else {"default_hooks.checkpoint": None}
    )
    if int(val_points) < 1 or iters % int(val_points):
        raise ValueError(
            f"segmentation: curve_points={val_points!r} must be a positive divisor of "
            f"iters={iters} (the validations fall on equal intervals, the last at the end)"
        )
    opts = {
        "train_cfg.max_iters": iters,
        "train_cfg.val_interval": iters // int(val_points),
        "param_scheduler.0.end": iters,
        **checkpoint,
        "default_hooks.logger.interval": max(1, min(100, iters)),
        "train_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "val_dataloader.num_workers": 0,
        "val_dataloader.persistent_workers": False,
        "test_dataloader.num_workers": 0,
        "test_dataloader.persistent_workers": False,
        "randomness.seed": seed,
        "log_level": "WARNING",  # mmengine's INFO lines would bury the progress bar
    }
    if optimizer:
        opts["optim_wrapper.optimizer"] = {"_delete_": True, **optimizer}
    if lr is not None:
        opts["optim_wrapper.optimizer.lr"] = lr
    return opts


def recipe_options(settings: dict, iters: int, seed: int, keep_checkpoint: bool) -> dict:
    """:func:`schedule_options` from a task's settings: ``optimizer`` (None: the config's
    SGD), ``batch_size`` (None: the config's 8) and ``curve_points`` (validations over the
    run, default 1)."""
    optimizer = settings.get("optimizer")
    if optimizer is not None and (not isinstance(optimizer, dict) or "type" not in optimizer):
        raise ValueError(
            "segmentation: optimizer must be a dict with a 'type', e.g. "
            f"dict(type='AdamW', weight_decay=1e-4); got {optimizer!r}"
        )
    opts = schedule_options(
        iters,
        seed,
        keep_checkpoint=keep_checkpoint,
        optimizer=optimizer,
        val_points=int(settings.get("curve_points", 1)),
    )
    batch = settings.get("batch_size")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"segmentation: batch_size must be a positive int, got {batch!r}")
        opts["train_dataloader.batch_size"] = batch
    return opts


def carve_options(fraction: float, data_seed: int) -> dict:
    """``cfg_options``: train on the training part of the carve, validate on its validation
    split (both from DigitMosaic's training images; the test loader is left alone)."""
    carve = {"fraction": float(fraction), "seed": int(data_seed)}
    return {
        "train_dataloader.dataset.carve": dict(carve, part="train"),
        "val_dataloader.dataset.split": "train",
        "val_dataloader.dataset.carve": dict(carve, part="val"),
    }


def lr_grid(settings: dict, loss: str) -> dict[str, list[float]]:
    """The lr grid of ``loss`` (``selection.grid`` with ``grid_by_loss[loss]`` over it).

    Only ``lr`` is searched here; another key is an error that names it.
    """
    grid = grid_for(settings, loss)
    other = sorted(set(grid) - {"lr"})
    if other:
        raise ValueError(
            f"segmentation: selection grid key(s) {other} (loss {loss!r}) cannot be searched; "
            "tasks.segmentation.selection.grid takes only 'lr'"
        )
    if not grid.get("lr"):
        raise ValueError(
            "segmentation: tasks.segmentation.selection.grid needs a non-empty 'lr' list, "
            f"e.g. dict(lr=[0.02, 0.05, 0.1]); got {grid!r}"
        )
    return {"lr": [float(v) for v in grid["lr"]]}


def selection_mode(settings: dict) -> str:
    return settings.get("selection", {}).get("mode", "validation")


@dataclass
class SegRun:
    """One trained model: its Runner, its final validation metrics, and whether it diverged."""

    runner: Any
    val: dict[str, float]
    diverged: bool
    #: ``{"iter", "mIoU", ...}`` of each validation during training (the training curve).
    val_history: list = field(default_factory=list)
    #: The training loss, as ``(iteration, mean over a window)`` pairs (at most 50).
    loss_curve: list = field(default_factory=list)


def has_diverged(runner) -> bool:
    """True when the last training loss or a weight of the model is not finite."""
    buf = runner.message_hub.log_scalars.get("train/loss")
    if buf is not None and not math.isfinite(float(buf.current())):
        return True
    return not all(bool(torch.isfinite(p).all()) for p in runner.model.parameters())


def loader_test_images(cfg) -> dict:
    """The config's ``test_dataloader`` (the 100 ``val`` images), checked to be uncarved."""
    loader = copy.deepcopy(cfg.test_dataloader)
    ds = loader["dataset"]
    if ds.get("split") != "val" or ds.get("carve") is not None:
        raise RuntimeError(
            "segmentation: test_dataloader must read DigitMosaic's 100 'val' images, uncarved; "
            f"got split={ds.get('split')!r}, carve={ds.get('carve')!r}"
        )
    return loader


def loader_training_part(cfg) -> dict:
    """A test loader over the run's training part (its training dataset, the test pipeline)."""
    loader = copy.deepcopy(cfg.test_dataloader)
    loader["dataset"] = dict(
        copy.deepcopy(cfg.train_dataloader.dataset), pipeline=loader["dataset"]["pipeline"]
    )
    return loader


def train_run(config: Path, work_dir: Path, options: dict, lr: float) -> SegRun:
    """Train ``config`` at ``lr`` with ``options`` (schedule, carve, seed): its :class:`SegRun`."""
    opts = {
        **options,
        "optim_wrapper.optimizer.lr": float(lr),
        # mmengine names a run's MessageHub and logger by config and second, and reuses
        # them for a second run of that name: one unique name per run.
        "experiment_name": f"{DATASET}_{config.stem}_lr{lr:g}_{next(_RUN_IDS)}",
    }
    from hem_plugins.benchmark.mmseg.runner import fit

    history: list = []
    runner, val = fit(str(config), str(work_dir), opts, val_history=history)
    return SegRun(runner, val, has_diverged(runner), history, loss_curve(runner))


def loss_curve(runner, windows: int = 50) -> list[list[float]]:
    """``[[iteration, mean loss], ...]``: mmengine's per-iteration ``train/loss`` (the sum of
    the heads' losses) averaged over at most ``windows`` equal windows."""
    buf = runner.message_hub.log_scalars.get("train/loss")
    if buf is None:
        return []
    values = np.asarray(buf.data[0], dtype=float)
    if values.size == 0:
        return []
    edges = np.linspace(0, values.size, min(windows, values.size) + 1).round().astype(int)
    return [[int(b), float(values[a:b].mean())] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def curve_extra(run: SegRun) -> dict:
    """The record's training curves: validation mIoU / mAcc per validation, and the loss."""
    return {
        "val_curve": [
            {"iter": h["iter"], "mIoU": h.get("mIoU"), "mAcc": h.get("mAcc")}
            for h in run.val_history
        ],
        "loss_curve": run.loss_curve,
    }


def final_metrics(run: SegRun, loss: str) -> dict[str, float]:
    """The kept model's record metrics: IoUMetric on the test images (percent), ``train_acc``
    (IoUMetric's ``FIT_METRIC`` on its training part, as a fraction) and ``diverged``."""
    test, fit = evaluate_run(run)
    missing = [m for m in METRICS if m not in test] + [FIT_METRIC] * (FIT_METRIC not in fit)
    if missing:
        raise RuntimeError(f"segmentation {loss}: IoUMetric returned no {missing}")
    metrics = {m: float(test[m]) for m in METRICS}
    metrics["train_acc"] = float(fit[FIT_METRIC]) / 100.0
    metrics["diverged"] = float(run.diverged)
    return metrics


def grid_units(settings: dict, losses: list[str]) -> int:
    """Trainings per seed of ``losses``: one per lr of each grid (validation mode), or one
    per loss (tuned)."""
    if selection_mode(settings) == "tuned":
        return len(losses)
    return sum(len(grid_points(lr_grid(settings, loss))) for loss in losses)


def select_and_train(
    settings: dict,
    task: str,
    loss: str,
    config: Path,
    options: dict,
    work_dir: Path,
    advance: Callable[[float], None],
) -> tuple[dict, dict, SegRun]:
    """Choose the lr of ``loss`` (:func:`..protocol.select` by validation mIoU over its
    grid, or the tuned file's) and train ``config`` with ``options`` at it: ``(params,
    selection record, the kept run)``. ``advance(lr)`` is called before each training."""

    def train_at(params: dict) -> SegRun:
        lr = float(params["lr"])
        advance(lr)
        return train_run(config, work_dir / f"lr{lr:g}", options, lr)

    def score(params: dict) -> tuple[float, SegRun]:
        run = train_at(params)
        return (math.nan if run.diverged else run.val.get("mIoU", math.nan)), run

    # the iterations are part of the setting: 3e and a rerun of it at other iters differ
    key = selection_key(DATASET, f"iters={int(settings['iters'])}", loss)
    grid = {} if selection_mode(settings) == "tuned" else lr_grid(settings, loss)
    params, record, run = select(settings, task, key, grid, score, SELECTION_METRIC)
    if run is None:  # tuned: the lr comes from the tuned file, train once
        run = train_at(params)
    return params, record, run


def evaluate_run(run: SegRun, fit_evaluator: dict | None = None) -> tuple[dict, dict]:
    """``(test metrics, training-part metrics)`` of the kept model: the config's
    ``test_evaluator`` on the test images, ``fit_evaluator`` (default: the same) on its
    training part."""
    from hem_plugins.benchmark.mmseg.runner import evaluate

    cfg = run.runner.cfg
    test = evaluate(run.runner, loader_test_images(cfg))
    return test, evaluate(run.runner, loader_training_part(cfg), fit_evaluator)
