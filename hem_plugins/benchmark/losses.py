"""Losses of the benchmark by name, built from the training set they will see.

Margins follow the paper's recipe: HEM, MM and HEM-without-threshold use
``margin_for_dataset(n_train)``; HEM+ uses ``class_margins`` of the training
set's class counts (``HEMPlusLoss(class_counts=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import HEMLoss, HEMPlusLoss, margin_for_dataset, mm_loss
from ..functional import DIVISOR_FLOOR
from .baselines import HEMNoThresholdLoss, LogitAdjustedLoss, LogitNormLoss

LOSSES = {
    "ce": "CE",
    "mm": "MM",
    "hem_nothr": "HEM w/o threshold",
    "hem": "HEM",
    "hem_plus": "HEM+",
    "hem_plus_error": "HEM+ error-driven",  # adaptive margins (docs/adaptive_margins.md)
    "hem_plus_sched": "HEM+ scheduled",
    "hem_rows": "HEM (rows)",  # divisor="rows" (docs/divisor.md; task `divisor`)
    "hem_floor": "HEM (floor)",  # divisor=("floor", f)
    "logitnorm": "LogitNorm",
    "logit_adjusted": "Logit-adjusted",
    "dice": "Dice",  # segmentation only (mmseg's DiceLoss)
    "ce_dice": "CE+Dice",  # segmentation only (3e: mmseg's CE 1.0 + Dice 3.0)
    "ohem": "CE+OHEM",  # segmentation only (3e: mmseg's CE with OHEMPixelSampler)
    "focal": "Focal",  # segmentation only (3e: mmseg's sigmoid FocalLoss)
}
MARGIN_LOSSES = ("mm", "hem_nothr", "hem", "hem_plus", "hem_rows", "hem_floor")


class MMLoss(nn.Module):
    """Multi-class margin loss with a fixed margin (:func:`hem_plugins.mm_loss`)."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mm_loss(logits, target, self.margin)


def build_loss(
    name: str, class_counts: Sequence[int], options: dict | None = None
) -> tuple[nn.Module, float | list[float] | None]:
    """Return ``(criterion, margin)`` for loss ``name`` trained on data with these class counts.

    Options: ``margin_scale`` (2000), ``logitnorm_temperature`` (0.04),
    ``logit_adjusted_tau`` (1.0); for the adaptive HEM+ rules ``margin_rule_options``
    (a dict by loss name) and, for ``hem_plus_sched``, ``margin_warmup`` (the fraction
    of training over which the margins grow) with ``train_epochs`` and
    ``train_batch_size`` (the steps of the run).
    ``logit_adjusted_tau`` (1.0), ``divisor_floor`` (``f`` of ``hem_floor``; default
    :data:`hem_plugins.functional.DIVISOR_FLOOR`).
    """
    opts = dict(options or {})
    scale = float(opts.get("margin_scale", 2000.0))
    n_train = int(sum(class_counts))
    margin = margin_for_dataset(n_train, scale)
    if name == "ce":
        return nn.CrossEntropyLoss(), None
    if name == "mm":
        return MMLoss(margin), margin
    if name == "hem_nothr":
        return HEMNoThresholdLoss(margin), margin
    if name == "hem":
        return HEMLoss(margin=margin, scale=scale), margin
    if name in ("hem_rows", "hem_floor"):
        divisor = "rows"
        if name == "hem_floor":
            divisor = ("floor", float(opts.get("divisor_floor", DIVISOR_FLOOR)))
        return HEMLoss(margin=margin, scale=scale, divisor=divisor), margin
    if name == "hem_plus":
        crit = HEMPlusLoss(class_counts=list(class_counts), scale=scale)
        return crit, [round(float(m), 4) for m in crit.margins]
    if name in ("hem_plus_error", "hem_plus_sched"):
        rule = dict(opts.get("margin_rule_options", {}).get(name, {}))
        if name == "hem_plus_error":
            rule.setdefault("type", "error")
        else:
            steps = int(opts["train_epochs"]) * math.ceil(n_train / int(opts["train_batch_size"]))
            frac = float(opts.get("margin_warmup", 0.5))
            rule = {"type": "scheduled", "warmup_steps": max(1, round(frac * steps)), **rule}
        crit = HEMPlusLoss(class_counts=list(class_counts), scale=scale, margin_rule=rule)
        return crit, [round(float(m), 4) for m in crit.margin]
    if name == "logitnorm":
        return LogitNormLoss(float(opts.get("logitnorm_temperature", 0.04))), None
    if name == "logit_adjusted":
        return LogitAdjustedLoss(
            list(class_counts), float(opts.get("logit_adjusted_tau", 1.0))
        ), None
    raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")


def loss_label(name: str) -> str:
    return LOSSES.get(name, name)
