r"""A rule for the rows HEM has settled: push their margin further (the paper's open question 3).

HEM gives a settled row (target logit ahead of every other by at least its margin ``mu``,
:func:`~hem_plugins.settled_mask`) zero loss and zero gradient. The paper asks whether such
samples should get a regularisation term or stronger augmentation to generalise better.
:class:`SettledMarginPenalty` is one targeted answer: a criterion wrapper that adds, on the
settled rows only, the multi-class margin loss at a larger margin ``factor * mu``:

.. math::

    L = L_{\mathrm{base}}(x, t) + \frac{\lambda}{N}
        \sum_{j \in S} \sum_{i \ne t_j} \max(0,\ f \mu_j - x_{j,t_j} + x_{j,i}) / C

with ``S`` the rows settled at ``mu`` (the same mask a
:class:`~hem_plugins.skipping.SettledTracker` records, computed by the same code), ``N``
the rows of the batch that are not ignored and ``C`` the classes. Rows not settled get the
base loss's gradient only. ``weight=0`` is *off*: the wrapper returns the base criterion's
loss itself, nothing else is computed.

Usable wherever a criterion is: a plain loop (``loss = rule(logits, target)``) or
Avalanche (``Naive(..., criterion=SettledMarginPenalty(HEMLoss()))``; the wrapper forwards
``set_num_samples`` and ``margins`` to the HEM criterion, so
:class:`~hem_plugins.avalanche.HEMPlugin`-style margin setting keeps working). With a
``tracker`` and ``indices`` (a plain loop with :class:`~hem_plugins.skipping.IndexedDataset`)
the mask is recorded there too (:meth:`SettledTracker.observe`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .functional import mm_loss
from .settled import settled_mask
from .skipping import SettledTracker

__all__ = ["SettledMarginPenalty"]


class SettledMarginPenalty(nn.Module):
    """``criterion(x, t) + weight / N * sum over settled rows of the MM loss at factor * margin``.

    Args:
        criterion: the HEM criterion (:class:`~hem_plugins.HEMLoss` or
            :class:`~hem_plugins.HEMPlusLoss`): anything with a ``margins`` attribute
            (a 0-dim or ``(C,)`` tensor) whose call returns the loss.
        weight: ``lambda`` of the penalty, ``>= 0``; 0 turns the rule off (the base loss
            is returned untouched).
        factor: the penalty's margin as a multiple of the criterion's, ``> 1``.
        tracker: an optional :class:`~hem_plugins.skipping.SettledTracker` that records
            the mask of every call given ``indices``.
        ignore_index: target value of rows that take no part (as the criterion's).

    Example:
        >>> import torch
        >>> from hem_plugins import HEMLoss
        >>> rule = SettledMarginPenalty(HEMLoss(margin=1.0), weight=1.0, factor=3.0)
        >>> x, t = torch.tensor([[2.0, 0.0], [0.0, 0.5]]), torch.tensor([0, 0])
        >>> float(rule(x, t) - rule.criterion(x, t))  # row 0 settled: (3 - 2) / 2 classes / 2 rows
        0.25
    """

    def __init__(
        self,
        criterion: nn.Module,
        weight: float = 0.1,
        factor: float = 2.0,
        tracker: SettledTracker | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if not hasattr(criterion, "margins"):
            raise TypeError(
                "criterion must be a HEM criterion with a `margins` attribute (HEMLoss, "
                f"HEMPlusLoss), got {type(criterion).__name__}"
            )
        weight, factor = float(weight), float(factor)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if not math.isfinite(factor) or factor <= 1:
            raise ValueError(f"factor must be a finite number > 1, got {factor}")
        if tracker is not None and not isinstance(tracker, SettledTracker):
            raise TypeError(f"tracker must be a SettledTracker, got {type(tracker).__name__}")
        self.criterion, self.weight, self.factor = criterion, weight, factor
        self.tracker, self.ignore_index = tracker, int(ignore_index)

    @property
    def margins(self) -> torch.Tensor:
        return self.criterion.margins

    def set_num_samples(self, n: int) -> None:
        """Forwarded to the criterion (:meth:`HEMLoss.set_num_samples`)."""
        self.criterion.set_num_samples(n)

    def settled(self, logits: torch.Tensor, target: torch.Tensor, indices=None) -> torch.Tensor:
        """The rows settled at the criterion's margin (recorded in ``tracker`` with ``indices``)."""
        if self.tracker is not None and indices is not None:
            return self.tracker.observe(indices, logits, target, self.margins, self.ignore_index)
        return settled_mask(logits, target, self.margins, ignore_index=self.ignore_index)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = self.criterion(logits, target)
        if self.weight == 0 and (self.tracker is None or indices is None):
            return loss  # off: the plain HEM loss, nothing else computed
        if logits.dim() != 2:
            raise ValueError(
                f"SettledMarginPenalty takes (N, C) logits, got shape {tuple(logits.shape)}"
            )
        mask = self.settled(logits, target, indices)
        if self.weight == 0 or not bool(mask.any()):
            return loss
        margin = self.margins.to(logits.device) * self.factor
        rows = int((target != self.ignore_index).sum())
        extra = mm_loss(logits[mask], target[mask], margin, reduction="sum") / rows
        return loss + self.weight * extra

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, factor={self.factor:g}"
