"""One training loop for every loss: SGD with momentum, cosine or constant lr.

Deterministic on the CPU for a given seed: the seed fixes the initial weights
and the order of the mini-batches (``torch.randperm`` with its own generator).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .data import Split
from .losses import build_loss
from .models import build_model

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


def fit(
    split: Split,
    loss: str,
    seed: int,
    train_cfg: dict,
    model_cfg: dict,
    loss_cfg: dict,
    device: str = "cpu",
    lr: float | None = None,
    epoch_eval: Callable[[nn.Module], float] | None = None,
) -> tuple[nn.Module, dict]:
    """Train a fresh model on ``split`` with ``loss``; return it (in eval mode) and its history.

    History: ``lr``, ``margin``, ``train_loss`` and ``train_acc`` per epoch,
    ``eval`` per epoch when ``epoch_eval`` is given, and ``diverged`` (a
    non-finite loss stops training).
    """
    torch.manual_seed(seed)
    model = build_model(
        split.x_train,
        split.num_classes,
        model_cfg.get("kind", "auto"),
        model_cfg.get("hidden", (256, 256)),
    ).to(device)
    criterion, margin = build_loss(loss, split.class_counts(), loss_cfg)
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
    else:
        raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {schedule!r}")
    x, y = split.x_train.to(device), split.y_train.to(device)
    gen = torch.Generator().manual_seed(seed)
    hist: dict = {"lr": lr, "margin": margin, "train_loss": [], "train_acc": [], "eval": []}
    hist["diverged"] = False
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        tot_loss, correct = 0.0, 0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            out = model(x[idx])
            # Logits that are non-finite, or so large that the loss overflows float32:
            # the run has diverged; stop and report it.
            if not bool(out.detach().abs().amax() < DIVERGED_LOGIT):
                hist["diverged"] = True
                break
            batch_loss = criterion(out, y[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(batch_loss.detach()) * len(idx)
            correct += int((out.detach().argmax(1) == y[idx]).sum())
        if hist["diverged"] or not math.isfinite(tot_loss):
            hist["diverged"] = True
            break
        hist["train_loss"].append(tot_loss / n)
        hist["train_acc"].append(correct / n)
        if epoch_eval is not None:
            model.eval()
            hist["eval"].append(float(epoch_eval(model)))
    model.eval()
    return model, hist


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, device: str = "cpu", batch: int = 4096
) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (on the CPU); non-finite values of a diverged model
    are replaced by finite ones (``torch.nan_to_num``) so the metrics stay defined."""
    model.eval()
    out = torch.cat([model(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])
    return torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)
