r"""Rival losses that the paper compares HEM against and no installed library provides.

* :func:`logitnorm_loss` / :class:`LogitNormLoss` -- LogitNorm (Wei et al., ICML 2022,
  "Mitigating Neural Network Overconfidence with Logit Normalization"): cross-entropy
  of the logits divided by their L2 norm and a temperature,
  ``CE(x / (tau * (||x||_2 + eps)), t)``.
* :func:`logit_adjusted_loss` / :class:`LogitAdjustedLoss` -- logit-adjusted loss
  (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment"):
  cross-entropy of the logits shifted by the log class priors,
  ``CE(x + tau * log(pi), t)`` with ``pi[c] = s[c] / sum(s)``.
* :func:`hem_nothreshold_loss` / :class:`HEMNoThresholdLoss` -- HEM without its
  threshold, for the ablation MM -> HEM-without-threshold -> HEM. The same errors
  as :func:`hem_plugins.hem_loss` (computed by the core), averaged over the
  *non-zero* errors instead of over the errors above their mean:
  ``L = sum_{e > 0} e / |{e > 0}|``. Multi-class margin loss averages over all
  ``|V| * C`` entries; HEM over those above the mean ``ebar``. This variant
  isolates the threshold: it differs from HEM only in the kept set. (The paper's
  own code was not available; this definition is this project's reading of its
  ablation, stated in the benchmark report.)

All take logits ``(N, C)`` or ``(N, C, d1, ...)`` and integer targets ``(N,)`` or
``(N, d1, ...)``, and need torch alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..implementations.entry import check_call, check_rows, errors, input_value_flags

__all__ = [
    "HEMNoThresholdLoss",
    "LogitAdjustedLoss",
    "LogitNormLoss",
    "hem_nothreshold_loss",
    "logit_adjusted_loss",
    "logitnorm_loss",
]

_LOGITNORM_EPS = 1e-7  # as in Wei et al.'s reference code


def _check_ce_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (N, C) or (N, C, d1, ...), got {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected {expected}"
        )


def logitnorm_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 0.04,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""LogitNorm loss (Wei et al., 2022): ``CE(x / (tau * (||x||_2 + 1e-7)), t)``.

    The norm is taken over the class dimension (dim 1) of every row. The paper's
    default temperature for CIFAR-10 is 0.04.

    Example:
        >>> import torch
        >>> x = torch.tensor([[3.0, 4.0]])  # norm 5: normalised logits (0.6, 0.8)
        >>> round(logitnorm_loss(x, torch.tensor([0]), temperature=1.0).item(), 4)  # log(1 + e^0.2)
        0.7981
    """
    _check_ce_inputs(logits, target)
    temperature = float(temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    norms = torch.linalg.vector_norm(logits, ord=2, dim=1, keepdim=True) + _LOGITNORM_EPS
    return F.cross_entropy(
        logits / (norms * temperature), target, ignore_index=ignore_index, reduction=reduction
    )


def log_priors(class_counts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().flatten().cpu()
    if counts.numel() == 0 or not bool(torch.isfinite(counts).all()):
        raise ValueError(f"class_counts must be a non-empty finite sequence, got {counts.tolist()}")
    if bool((counts < 0).any()) or not bool((counts > 0).any()):
        raise ValueError(
            f"class_counts must be non-negative with at least one > 0, got {counts.tolist()}"
        )
    # A class with no sample gets a tiny prior (a large negative offset), never -inf.
    prior = (counts / counts.sum()).clamp_min(1e-12)
    return prior.log().float()


def logit_adjusted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_counts: Sequence[float] | torch.Tensor,
    tau: float = 1.0,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Logit-adjusted cross-entropy (Menon et al., 2021): ``CE(x + tau * log(pi), t)``.

    ``pi[c] = class_counts[c] / sum(class_counts)``, the class priors of the
    training set. At test time the raw logits are used (no adjustment).

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 2)  # priors (0.75, 0.25): adjusted logits log 0.75, log 0.25
        >>> loss = logit_adjusted_loss(x, torch.tensor([0, 1]), [3, 1], reduction="none")
        >>> [round(v, 4) for v in loss.tolist()]  # log(4/3), log(4)
        [0.2877, 1.3863]
    """
    _check_ce_inputs(logits, target)
    log_prior = log_priors(class_counts).to(device=logits.device, dtype=logits.dtype)
    if log_prior.numel() != logits.shape[1]:
        raise ValueError(
            f"class_counts has {log_prior.numel()} entries but logits have C={logits.shape[1]}"
        )
    shape = (1, -1) + (1,) * (logits.dim() - 2)
    return F.cross_entropy(
        logits + float(tau) * log_prior.view(shape),
        target,
        ignore_index=ignore_index,
        reduction=reduction,
    )


def hem_nothreshold_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    p: int = 1,
) -> torch.Tensor:
    r"""HEM without the threshold: the mean of the non-zero margin errors.

    ``e[j, i]`` are the errors of :func:`hem_plugins.hem_loss` (the core computes
    them); ``'mean'`` returns ``sum(e) / |{(j, i) : e[j, i] > 0}|`` (0, in the
    graph, when no error is positive), ``'sum'`` the sum of all errors and
    ``'none'`` the per-row sums.

    Example:
        >>> import torch
        >>> x = torch.tensor([[2.0, 1.1, 1.5], [0.1, 0.3, 0.2]])
        >>> t = torch.tensor([0, 1])  # errors 0.1, 0.5 | 0.8, 0.9; HEM keeps only those > 0.383
        >>> round(hem_nothreshold_loss(x, t, 1.0).item(), 4)  # 2.3 / 4
        0.575
    """
    check_call(logits, target, margin, reduction=reduction, p=p)
    rows, e = errors(logits, target, margin, ignore_index, p)
    inputs = input_value_flags(margin, None, None)
    (count,) = check_rows(rows, e.detach().sum(), True, inputs, (e.detach() > 0).sum())
    if reduction == "none":
        return e.sum(1).reshape(target.shape)
    if reduction == "sum":
        return e.sum()
    return e.sum() / max(count, 1.0)


class LogitNormLoss(nn.Module):
    """Module form of :func:`logitnorm_loss`."""

    def __init__(
        self, temperature: float = 0.04, *, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature, self.ignore_index, self.reduction = (
            float(temperature),
            ignore_index,
            reduction,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logitnorm_loss(
            logits,
            target,
            self.temperature,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class LogitAdjustedLoss(nn.Module):
    """Module form of :func:`logit_adjusted_loss`; the log priors are a buffer."""

    def __init__(
        self,
        class_counts: Sequence[float] | torch.Tensor,
        tau: float = 1.0,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.register_buffer("log_prior", log_priors(class_counts))
        self.tau, self.ignore_index, self.reduction = float(tau), ignore_index, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_ce_inputs(logits, target)
        if self.log_prior.numel() != logits.shape[1]:
            raise ValueError(
                f"LogitAdjustedLoss has priors for {self.log_prior.numel()} classes but the "
                f"logits have C={logits.shape[1]}"
            )
        shape = (1, -1) + (1,) * (logits.dim() - 2)
        return F.cross_entropy(
            logits + self.tau * self.log_prior.to(logits.dtype).view(shape),
            target,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class HEMNoThresholdLoss(nn.Module):
    """Module form of :func:`hem_nothreshold_loss` with a fixed margin."""

    def __init__(
        self, margin: float, *, ignore_index: int = -100, reduction: str = "mean", p: int = 1
    ) -> None:
        super().__init__()
        self.margin, self.ignore_index, self.reduction, self.p = (
            float(margin),
            ignore_index,
            reduction,
            p,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hem_nothreshold_loss(
            logits,
            target,
            self.margin,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            p=self.p,
        )
