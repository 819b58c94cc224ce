"""LogitNorm (Wei et al., ICML 2022) as an mmseg decode-head loss: the confidence-calibration
rival of the anomaly-segmentation comparison (``docs/anomaly_segmentation.md``).

The math is :func:`hem_plugins.benchmark.baselines.logitnorm_loss` (the classification
tasks' LogitNorm), ``CE(x / (tau * (||x||_2 + 1e-7)), t)`` per pixel, the norm over the class
dimension; the reduction is mmseg's ``weight_reduce_loss``. Registered by
:mod:`hem_plugins.benchmark.mmseg`; config::

    custom_imports = dict(imports=['hem_plugins.benchmark.mmseg'])
    model = dict(decode_head=dict(loss_decode=dict(type='LogitNormLoss', temperature=0.04)))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS
from torch import nn

from ..baselines import logitnorm_loss

__all__ = ["LogitNormLoss"]

REDUCTIONS = ("none", "mean", "sum")


@MODELS.register_module(name="LogitNormLoss")
class LogitNormLoss(nn.Module):
    """LogitNorm for a decode head: per-pixel CE of the logits divided by ``temperature`` times
    their L2 norm over the classes.

    Args:
        temperature: ``tau`` (0.04: the paper's default).
        reduction: ``'mean'`` (over the labelled pixels, or ``sum / avg_factor`` when the
            caller gives ``avg_factor``), ``'sum'`` or ``'none'`` (per pixel, 0 on ignored ones).
        loss_weight: multiplies the loss.
        loss_name: key in mmseg's loss dict (``loss_logitnorm``).
        use_sigmoid, avg_non_ignore: accepted for a swap over a CE config (``use_sigmoid``
            must be False; the mean is over the labelled pixels anyway).
    """

    def __init__(
        self,
        temperature: float = 0.04,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        loss_name: str = "loss_logitnorm",
        use_sigmoid: bool = False,
        avg_non_ignore: bool = True,
    ) -> None:
        super().__init__()
        if use_sigmoid:
            raise ValueError("LogitNormLoss is a softmax loss: use_sigmoid must be False")
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"LogitNormLoss: temperature must be finite and > 0, got {temperature}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"LogitNormLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}"
            )
        if not loss_name.startswith("loss_"):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        self.temperature, self.reduction = temperature, reduction
        self.loss_weight, self._loss_name = float(loss_weight), loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self, cls_score, label, weight=None, avg_factor=None, reduction_override=None,
        ignore_index=255, **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        if reduction_override not in (None, *REDUCTIONS):
            raise ValueError(
                f"LogitNormLoss: reduction_override must be None or one of {REDUCTIONS}, "
                f"got {reduction_override!r}"
            )
        reduction = reduction_override or self.reduction
        loss = logitnorm_loss(cls_score, label, self.temperature, ignore_index=ignore_index,
                              reduction="none")  # fmt: skip
        if weight is not None:
            if weight.shape != loss.shape:
                raise ValueError(
                    f"LogitNormLoss: weight shape {tuple(weight.shape)} must be the label's "
                    f"{tuple(loss.shape)}"
                )
            weight = weight.float()
        if avg_factor is None and reduction == "mean":
            avg_factor = (label != ignore_index).sum().clamp(min=1).item()
        loss = weight_reduce_loss(loss, weight, reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * loss
