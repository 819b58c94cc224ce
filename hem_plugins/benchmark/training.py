"""One training loop for every loss: SGD with momentum, cosine or constant lr.

Deterministic on the CPU for a given seed: the seed fixes the initial weights
and the order of the mini-batches (``torch.randperm`` with its own generator).

:func:`train_selected` is how the classification tasks train: it carves a
validation split out of the training data, chooses the hyper-parameters on it
(:func:`hem_plugins.benchmark.protocol.select`) and returns the chosen run with its
health (``train_acc``) and, for the margin losses, its diagnostics
(``kept_fraction``, ``gap_over_margin``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..settled import kept_mask
from ..settled_rules import SettledMarginPenalty
from .data import Split
from .losses import MARGIN_LOSSES, build_loss
from .models import build_model
from .protocol import carve_validation, grid_for, select, val_fraction

#: A logit above this magnitude marks a diverged run (its loss would overflow float32).
DIVERGED_LOGIT = 1e12


def lr_for(loss: str, train_cfg: dict) -> float:
    """Initial lr of ``loss``: ``train.lr`` is a number, or a dict by loss name with ``default``."""
    lr = train_cfg.get("lr", 0.1)
    if isinstance(lr, dict):
        if loss in lr:
            return float(lr[loss])
        if "default" in lr:
            return float(lr["default"])
        raise KeyError(f"train.lr has no entry for loss {loss!r} and no 'default': {lr}")
    return float(lr)


def apply_params(params: dict, train_cfg: dict, loss_cfg: dict) -> tuple[dict, dict]:
    """``train_cfg`` and ``loss_cfg`` with the selected hyper-parameters put in:
    ``lr`` and ``epochs`` go to training, ``temperature`` to LogitNorm."""
    train_cfg, loss_cfg = dict(train_cfg), dict(loss_cfg)
    for k, v in params.items():
        if k in ("lr", "epochs", "batch_size"):
            train_cfg[k] = v
        elif k == "temperature":
            loss_cfg["logitnorm_temperature"] = v
        elif k in ("margin_scale", "divisor_floor"):
            loss_cfg[k] = v
        else:
            raise KeyError(
                f"selection grid key {k!r} is not a hyper-parameter the suite can set; "
                "use lr, epochs, batch_size, temperature, margin_scale or divisor_floor"
            )
    return train_cfg, loss_cfg


def row_margins(margin, target: torch.Tensor) -> torch.Tensor | float:
    """The margin of each row: the loss's one margin, or the target class's (HEM+)."""
    if isinstance(margin, (list, tuple)):
        return torch.as_tensor(margin, dtype=torch.float32)[target]
    return float(margin)


@torch.no_grad()
def gap_over_margin(logits: torch.Tensor, target: torch.Tensor, margin) -> float:
    """Mean of ``(top1 - top2 logit) / row margin`` over the correctly classified rows.

    Large values (> 10) mean the logits have grown far past what the loss asks for:
    the softmax saturates, for unknown inputs too.
    """
    top2 = logits.float().topk(2, dim=1)
    correct = top2.indices[:, 0] == target
    if not bool(correct.any()):
        return float("nan")
    gap = (top2.values[:, 0] - top2.values[:, 1])[correct]
    mu = row_margins(margin, target[correct])
    return float((gap / mu).mean())


@dataclass
class EpochResult:
    """What :func:`train_epoch` saw: the summed loss (times batch size), the correct
    predictions (running, train mode) and whether the run diverged."""

    loss_sum: float = 0.0
    correct: int = 0
    diverged: bool = False


def train_epoch(
    model: nn.Module,
    criterion: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    *,
    sched: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> EpochResult:
    """One epoch of SGD over ``x[order]`` in mini-batches of ``batch_size``: the suite's loop.

    A one-sample batch is dropped (BatchNorm has no batch statistics for it).
    ``sched`` steps after every batch; ``on_batch(idx, logits)`` sees each batch's
    indices into ``x`` and its (detached) logits after the step. Logits that are
    non-finite or so large that the loss overflows float32 stop the epoch: the run
    has diverged.
    """
    model.train()
    res = EpochResult()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < 2:
            continue
        out = model(x[idx])
        if not bool(out.detach().abs().amax() < DIVERGED_LOGIT):
            res.diverged = True
            return res
        batch_loss = criterion(out, y[idx])
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        res.loss_sum += float(batch_loss.detach()) * len(idx)
        res.correct += int((out.detach().argmax(1) == y[idx]).sum())
        if on_batch is not None:
            on_batch(idx, out.detach())
    res.diverged = not math.isfinite(res.loss_sum)
    return res


def fit(
    split: Split,
    loss: str,
    seed: int,
    train_cfg: dict,
    model_cfg: dict,
    loss_cfg: dict,
    device: str = "cpu",
    lr: float | None = None,
    epoch_eval: Callable[[nn.Module], object] | None = None,
    diagnostics: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    sampler: Iterable[int] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Train a fresh model on ``split`` with ``loss``; return it (in eval mode) and its history.

    ``train_cfg``: ``epochs``, ``batch_size``, ``lr`` (or the ``lr`` argument), ``momentum``,
    ``weight_decay`` and ``schedule``: ``cosine`` (over every step), ``constant``, or
    ``cosine_epochs`` (over the epochs, the lr set at the start of each: an epoch's steps
    need not be known in advance). ``model_cfg``: ``kind``, ``hidden`` and ``standardize``
    (:func:`.models.build_model`).

    Each epoch trains on a fresh permutation of the training set drawn from ``seed``, or
    on the indices ``sampler`` yields (iterated once per epoch, e.g. a
    :class:`~hem_plugins.skipping.SkipSettledSampler`); ``on_batch(idx, logits)`` sees
    every batch after its step (:func:`train_epoch`).

    History: ``lr``, ``margin``, ``train_loss`` and ``train_acc`` (running, in train
    mode) per epoch, ``epoch_seconds`` (the training loop of each epoch, drawing its order
    included), ``eval`` per epoch (what ``epoch_eval(model)`` returns) when ``epoch_eval``
    is given, and ``diverged`` (a non-finite loss stops training). For a margin loss also
    ``kept_fraction`` per epoch (``|K| / (|V| C)`` over the epoch's batches) and, with
    ``diagnostics = (x, y)`` (held-out known samples), ``gap_over_margin`` per epoch.
    """
    torch.manual_seed(seed)
    model = build_model(
        split.x_train,
        split.num_classes,
        model_cfg.get("kind", "auto"),
        model_cfg.get("hidden", (256, 256)),
        standardize=bool(model_cfg.get("standardize", True)),
    ).to(device)
    criterion, margin = build_loss(loss, split.class_counts(), loss_cfg)
    if loss_cfg.get("settled_rule"):  # docs/settled_rule.md: a penalty on settled rows only
        criterion = SettledMarginPenalty(criterion, **loss_cfg["settled_rule"])
    criterion = criterion.to(device)
    lr = lr_for(loss, train_cfg) if lr is None else float(lr)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=float(train_cfg.get("momentum", 0.9)),
        weight_decay=float(train_cfg.get("weight_decay", 5e-4)),
    )
    epochs, bs = int(train_cfg.get("epochs", 30)), int(train_cfg.get("batch_size", 64))
    n = split.n_train
    steps = epochs * math.ceil(n / bs)
    schedule = train_cfg.get("schedule", "cosine")
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    elif schedule == "cosine_epochs":
        sched = None
    else:
        raise ValueError(
            f"train.schedule must be 'cosine', 'constant' or 'cosine_epochs', got {schedule!r}"
        )
    x, y = split.x_train.to(device), split.y_train.to(device)
    gen = torch.Generator().manual_seed(seed)
    hist: dict = {"lr": lr, "margin": margin, "train_loss": [], "train_acc": [], "eval": []}
    hist["diverged"], hist["epoch_seconds"] = False, []
    margin_loss = loss in MARGIN_LOSSES
    if margin_loss:
        hist["kept_fraction"], hist["gap_over_margin"] = [], []
        kept_margin = torch.as_tensor(margin) if isinstance(margin, list) else margin
        thresholded = loss not in ("mm", "hem_nothr")  # those two: the non-zero errors
    for i in range(epochs):
        if schedule == "cosine_epochs":
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * i / epochs))
        kept, entries = 0, 0

        def batch_done(idx: torch.Tensor, out: torch.Tensor) -> None:
            nonlocal kept, entries
            if margin_loss:
                kept += int(kept_mask(out, y[idx], kept_margin, threshold=thresholded).sum())
                entries += out.numel()
            if on_batch is not None:
                on_batch(idx, out)

        start = time.perf_counter()
        if sampler is None:
            order = torch.randperm(n, generator=gen).to(device)
        else:
            order = torch.tensor(list(sampler), dtype=torch.long).to(device)
        epoch = train_epoch(model, criterion, opt, x, y, order, bs, sched=sched,
                            on_batch=batch_done if margin_loss or on_batch else None)  # fmt: skip
        hist["epoch_seconds"].append(time.perf_counter() - start)
        if epoch.diverged:
            hist["diverged"] = True
            break
        hist["train_loss"].append(epoch.loss_sum / n)
        hist["train_acc"].append(epoch.correct / n)
        model.eval()
        if epoch_eval is not None:
            hist["eval"].append(epoch_eval(model))
        if margin_loss:
            hist["kept_fraction"].append(kept / max(entries, 1))
            if diagnostics is not None:
                z = predict(model, diagnostics[0], device)
                hist["gap_over_margin"].append(gap_over_margin(z, diagnostics[1], margin))
    model.eval()
    return model, hist


def validation_carve(
    split: Split, fraction: float, seed: int
) -> tuple[Split, torch.Tensor, torch.Tensor]:
    """``(training part, x_val, y_val)``: ``split`` with ``fraction`` of each class of its
    training data carved out (with ``seed``, :func:`.protocol.carve_validation`) as the
    validation split; its test data stay as they are."""
    tr, val = carve_validation(split.y_train, fraction, seed)
    part = replace(split, x_train=split.x_train[tr], y_train=split.y_train[tr])
    return part, split.x_train[val], split.y_train[val]


def train_selected(
    settings: dict,
    task: str,
    key: str,
    split: Split,
    loss: str,
    train_cfg: dict,
    model_cfg: dict,
    data_seed: int,
    init_seed: int,
    device: str = "cpu",
    metric: str = "acc",
    epoch_eval: Callable[[nn.Module], float] | None = None,
    diagnostics: tuple[torch.Tensor, torch.Tensor] | None = None,
    fixed: dict | None = None,
) -> tuple[nn.Module, dict, Split]:
    """Carve a validation split from ``split``'s training data, choose the hyper-parameters
    on it and return ``(model, history, training part)`` of the chosen run.

    ``fixed``: the selection record of another run (its ``hist["selection"]``): nothing is
    chosen, the run trains once with that run's chosen values, and its record says so
    (``lr_selected_on``: ``"as <key> (<where that was chosen>)"``, an empty grid; a tune
    run's tuned file does not take it up, :func:`.protocol.tuned_from_results` reads only
    ``"validation"`` records).

    The model trains on the training part only (the training data less the validation
    split, ``selection.val_fraction`` of each class, carved with ``data_seed``); the test
    data of ``split`` are never looked at here. ``metric``: ``acc`` or ``balanced_acc``
    on the validation split (what the grid is scored by). The history gains
    ``selection`` (the protocol's record), ``val_score`` and ``final_train_acc``
    (accuracy of the final model, in eval mode, on the training part).
    """
    loss_cfg = settings.get("loss_options", {})
    part, x_val, y_val = validation_carve(split, val_fraction(settings), data_seed)

    def train(params: dict) -> tuple[nn.Module, dict]:
        t_cfg, l_cfg = apply_params(params, train_cfg, loss_cfg)
        return fit(part, loss, init_seed, t_cfg, model_cfg, l_cfg, device,
                   epoch_eval=epoch_eval, diagnostics=diagnostics)  # fmt: skip

    def score(params: dict) -> tuple[float, tuple]:
        model, hist = train(params)
        hist["val_score"] = (
            float("nan")
            if hist["diverged"]
            else accuracy(predict(model, x_val, device), y_val, metric)
        )
        return hist["val_score"], (model, hist)

    if fixed is not None:
        params, run = dict(fixed["chosen"]), None
        record = {"lr_selected_on": f"as {fixed['key']} ({fixed['lr_selected_on']})",
                  "metric": fixed["metric"], "grid": [], "chosen": dict(params), "key": key,
                  "fixed_from": fixed["key"]}  # fmt: skip
    else:
        params, record, run = select(settings, task, key, grid_for(settings, loss), score, metric)
    model, hist = run if run is not None else train(params)
    hist["selection"] = record
    hist["final_train_acc"] = accuracy(predict(model, part.x_train, device), part.y_train, "acc")
    return model, hist, part


def accuracy(logits: torch.Tensor, target: torch.Tensor, metric: str = "acc") -> float:
    """``acc`` (top-1) or ``balanced_acc`` (mean recall over the classes present in
    ``target``, scikit-learn's ``balanced_accuracy_score``)."""
    pred = logits.argmax(1)
    if metric == "acc":
        return float((pred == target).float().mean())
    if metric == "balanced_acc":
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(target.numpy(), pred.numpy()))
    raise ValueError(f"selection metric must be 'acc' or 'balanced_acc', got {metric!r}")


def run_metrics(hist: dict, margin_loss: bool) -> dict:
    """The health and diagnostic metrics every classification record holds."""
    out = {"train_acc": hist["final_train_acc"], "diverged": float(hist["diverged"])}
    if margin_loss:
        kf, gap = hist.get("kept_fraction") or [], hist.get("gap_over_margin") or []
        out["kept_fraction"] = kf[-1] if kf else float("nan")
        out["gap_over_margin"] = gap[-1] if gap else float("nan")
    return out


def run_extra(hist: dict, n_train: int, data_seed: int, init_seed: int) -> dict:
    """What every classification record keeps in ``extra``: the chosen hyper-parameters and
    where they were chosen, the margin, the seeds and the diagnostics' curves."""
    sel = hist["selection"]
    out = {
        "lr": hist["lr"],
        "margin": hist["margin"],
        "n_train": n_train,
        "data_seed": data_seed,
        "init_seed": init_seed,
        "lr_selected_on": sel["lr_selected_on"],
        "selection": sel,
    }
    if "kept_fraction" in hist:
        out["kept_fraction_curve"] = [round(v, 5) for v in hist["kept_fraction"]]
        out["gap_over_margin_curve"] = [round(v, 3) for v in hist["gap_over_margin"]]
    return out


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, device: str = "cpu", batch: int = 4096
) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (on the CPU); non-finite values of a diverged model
    are replaced by finite ones (``torch.nan_to_num``) so the metrics stay defined."""
    model.eval()
    out = torch.cat([model(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])
    return torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)
