"""Logit-adjusted cross-entropy (Menon et al., 2021) as an mmseg decode-head loss, and the hook
that gives it the pixel priors of the training set: the long-tail baseline of the adaptive-margin
comparison (``docs/adaptive_margins.md``).

The math is :func:`hem_plugins.benchmark.baselines.logit_adjusted_loss`,
``CE(x + tau * log(pi), t)`` per pixel, ``pi[c]`` the share of class ``c`` among the
labelled training pixels. Registered by :mod:`hem_plugins.benchmark.mmseg`; config::

    custom_imports = dict(imports=['hem_plugins.benchmark.mmseg'])
    model = dict(decode_head=dict(loss_decode=dict(type='LogitAdjustedLoss')))
    custom_hooks = [dict(type='LogitAdjustHook')]   # priors from train_dataloader.dataset
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS, MODELS
from torch import nn

from hem_plugins.mmseg.counts import build_count_dataset, count_pixels

from ..baselines import log_priors

__all__ = ["LogitAdjustHook", "LogitAdjustedLoss"]


@MODELS.register_module(name="LogitAdjustedLoss")
class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted CE for a decode head, averaged over the labelled pixels.

    Args:
        class_counts: ``(C,)`` training pixel counts, or None to have
            :class:`LogitAdjustHook` set them before training (the loss refuses
            to run without them).
        tau: the adjustment's temperature (1: Menon et al.'s default).
        loss_weight: multiplies the loss.
        loss_name: key in mmseg's loss dict (``loss_la``).
        use_sigmoid, avg_non_ignore: accepted for a swap over a CE config (must be
            False; the mean is over labelled pixels anyway).
    """

    def __init__(
        self,
        class_counts: Sequence[float] | None = None,
        tau: float = 1.0,
        loss_weight: float = 1.0,
        loss_name: str = "loss_la",
        use_sigmoid: bool = False,
        avg_non_ignore: bool = False,
    ) -> None:
        super().__init__()
        if use_sigmoid:
            raise ValueError("LogitAdjustedLoss is a softmax loss: use_sigmoid must be False")
        if not loss_name.startswith("loss_"):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        self.tau, self.loss_weight, self._loss_name = float(tau), float(loss_weight), loss_name
        self.register_buffer("log_prior", torch.zeros(0))
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def set_class_counts(self, counts: Sequence[float]) -> None:
        self.log_prior = log_priors(counts).to(self.log_prior.device)

    def forward(
        self, cls_score, label, weight=None, avg_factor=None, reduction_override=None,
        ignore_index=255, **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        if self.log_prior.numel() != cls_score.shape[1]:
            raise RuntimeError(
                f"LogitAdjustedLoss has priors for {self.log_prior.numel()} classes and the "
                f"logits have C={cls_score.shape[1]}: give class_counts or add LogitAdjustHook"
            )
        shape = (1, -1) + (1,) * (cls_score.dim() - 2)
        adjusted = cls_score + self.tau * self.log_prior.to(cls_score.dtype).view(shape)
        loss = F.cross_entropy(adjusted, label, ignore_index=ignore_index, reduction="none")
        valid = (label != ignore_index).to(loss.dtype)
        if weight is not None:
            valid = valid * weight
        if reduction_override == "none":
            return self.loss_weight * loss * valid
        total = (loss * valid).sum()
        if reduction_override == "sum":
            return self.loss_weight * total
        return self.loss_weight * total / valid.sum().clamp(min=1.0)


@HOOKS.register_module()
class LogitAdjustHook(Hook):
    """Before training, set every :class:`LogitAdjustedLoss` without counts to the pixel counts
    of ``train_dataloader.dataset`` (read as ``tools/class_counts.py`` reads it). Every rank
    counts the same annotation files, so all ranks get the same priors."""

    priority = "NORMAL"

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        todo = [m for m in model.modules() if isinstance(m, LogitAdjustedLoss)
                and m.log_prior.numel() == 0]  # fmt: skip
        if not todo:
            return
        dataset = build_count_dataset(runner.cfg.train_dataloader.dataset)
        counts = count_pixels(dataset, num_workers=0, progress=False)["counts"]
        for loss in todo:
            loss.set_class_counts(counts)
