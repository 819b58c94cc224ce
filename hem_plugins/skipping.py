r"""Skip training samples that HEM has already settled, and revisit them.

HEM gives zero loss and zero gradient to a *settled* sample, one whose target
logit beats every other by its margin (:func:`~hem_plugins.settled_mask`). The
paper (appendix B.3) asks whether training can stop presenting such samples.
This module holds the bookkeeping, torch alone:

- :class:`SettledTracker` remembers, per training sample, whether it was
  settled when last seen and in which epoch; it is ``state_dict``-able.
- :meth:`SettledTracker.plan` decides which samples an epoch presents: every
  sample not settled (or never seen), and each settled one once ``revisit_every``
  epochs have passed since it was last seen, or by chance with probability
  ``revisit_prob`` in any epoch. A revisited sample that has regressed is
  marked unsettled again and is presented every epoch until it settles.
- :class:`SkipSettledSampler` is a :class:`torch.utils.data.Sampler` over the
  planned samples, for plain training loops.
- :class:`IndexedDataset` makes a dataset return each item's index, so the
  loop knows which samples a batch holds.

A plain loop::

    tracker = SettledTracker(len(train_set))
    sampler = SkipSettledSampler(tracker, revisit_every=5, revisit_prob=0.05)
    loader = DataLoader(IndexedDataset(train_set), batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        for x, y, idx in loader:          # the sampler advances its epoch by itself
            logits = model(x)
            loss = criterion(logits, y)   # HEMLoss / HEMPlusLoss
            tracker.observe(idx, logits, y, criterion.margins)
            ...

Skipping is not free of side effects: HEM's threshold is computed over the
rows presented, so removing settled (zero-error) rows raises the threshold for
the rest of the batch; fewer samples per epoch means fewer optimiser steps per
epoch; and a sample may regress while it is skipped. :func:`pad_settled` (the
skipped rows counted in the threshold) and :func:`recheck` (a forward pass
without gradient before skipping) remove them; with every batch kept, less
its skipped rows, each step then has the full batch's loss and gradient. The
Avalanche plugin does all three by default; the sampler here does not
(``docs/skip_settled.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from .settled import settled_mask

__all__ = [
    "IndexedDataset",
    "SettledTracker",
    "SkipSettledSampler",
    "check_revisit",
    "pad_settled",
    "recheck",
]


def check_revisit(revisit_every: int | None, revisit_prob: float) -> None:
    """Raise a ``ValueError`` unless ``revisit_every`` is None or an int >= 1 and
    ``revisit_prob`` a probability (the revisit options of the sampler and the plugin)."""
    if revisit_every is not None and (
        isinstance(revisit_every, bool) or not isinstance(revisit_every, int) or revisit_every < 1
    ):
        raise ValueError(f"revisit_every must be None or an int >= 1, got {revisit_every!r}")
    p = float(revisit_prob)
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"revisit_prob must be a probability in [0, 1], got {revisit_prob!r}")


def pad_settled(
    logits: torch.Tensor, target: torch.Tensor, count: int, margin: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, target)`` with ``count`` placeholder rows of zero HEM error appended.

    The rows stand for the settled samples a batch skipped: HEM's threshold is
    the mean error over every row of the batch, so without them it rises for the
    rows presented, and fewer errors are kept than full training would keep. A
    placeholder costs no forward pass; its errors (zero for every class) enter the
    threshold's mean and nothing else, so when the skipped samples are still
    settled the loss and its gradient equal those of the full batch. Each
    placeholder copies the first row's logits (masked units stay masked) with
    its target class raised above every other logit by more than the largest
    margin; with no row to copy, zeros. The placeholders are constants (no gradient).
    """
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    if count == 0:
        return logits, target
    if logits.dim() != 2:
        raise ValueError(f"pad_settled takes (N, C) logits, got shape {tuple(logits.shape)}")
    mu = (
        float(torch.as_tensor(margin, dtype=torch.float64).max())
        if torch.is_tensor(margin)
        else float(margin)
    )
    with torch.no_grad():
        if logits.shape[0]:
            row = logits[0].detach().clone()
        else:
            row = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device)
        finite = torch.isfinite(row)
        top = int(torch.where(finite, row, torch.full_like(row, -math.inf)).argmax())
        row[top] = row[finite].max() + abs(mu) + 1.0
        rows = row.expand(count, -1)
        ys = torch.full((count,), top, dtype=target.dtype, device=target.device)
    return torch.cat([logits, rows]), torch.cat([target, ys])


def recheck(
    keep: torch.Tensor,
    forward: Any,
    target: torch.Tensor,
    margin: float | torch.Tensor,
    ignore_index: int = -100,
    model: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, int]:
    """Re-check the rows a plan skips with a forward pass without gradient.

    ``keep`` is a batch's bool mask of the rows to present; ``forward(rows)``
    returns the ``(n, C)`` logits of the rows of the bool mask ``rows``. Rows
    that are skipped but no longer settled (:func:`~hem_plugins.settled_mask`
    of the current model) are presented after all. Returns the new mask and
    the number of forward-only passes spent. ``model`` (optional) is put in
    eval mode during the check (no BatchNorm statistics updated, no dropout)
    and back after it. With the skipped rows checked, and counted in HEM's
    threshold (:func:`pad_settled`), a batch gives the loss and gradient of
    the full batch: the rows it leaves out have zero error now.
    """
    skip = ~keep.bool()
    n = int(skip.sum())
    if n == 0:
        return keep, 0
    was = model.training if model is not None else None
    try:
        if model is not None:
            model.eval()
        with torch.no_grad():
            out = forward(skip)
    finally:
        if model is not None:
            model.train(was)
    settled = settled_mask(out, target[skip].to(out.device), margin, ignore_index=ignore_index)
    keep = keep.clone().bool()
    keep[skip] = ~settled.to(keep.device)
    return keep, n


class SettledTracker:
    """Per-sample settled state, the epoch each sample was last seen, and pass counts.

    Samples are identified by an integer index in ``[0, num_samples)`` (the
    position in the training set; see :class:`IndexedDataset`). All state is
    on the CPU and in :meth:`state_dict`.

    Attributes:
        settled: ``(num_samples,)`` bool, settled when last seen.
        last_seen: ``(num_samples,)`` int64, epoch of the last visit, -1 if never.
        passes: ``(num_samples,)`` int64, how many times each sample was
            presented (forward + backward), for measuring the saving.
        epoch: the epoch that :meth:`update` stamps on the samples it sees
            (the sampler or the plugin sets it at the start of each epoch).

    Example:
        >>> t = SettledTracker(4)
        >>> t.update(torch.tensor([0, 1, 2, 3]), torch.tensor([True, True, False, True]))
        >>> t.epoch = 1
        >>> t.plan(revisit_every=2).tolist()  # sample 2 is not settled
        [False, False, True, False]
        >>> t.epoch = 2
        >>> t.plan(revisit_every=2).tolist()  # two epochs later every settled one is due
        [True, True, True, True]
    """

    def __init__(self, num_samples: int = 0) -> None:
        self.settled = torch.zeros(0, dtype=torch.bool)
        self.last_seen = torch.zeros(0, dtype=torch.long)
        self.passes = torch.zeros(0, dtype=torch.long)
        self.epoch = 0
        self.resize(num_samples)

    def __len__(self) -> int:
        return self.settled.numel()

    def resize(self, num_samples: int) -> None:
        """Grow to ``num_samples`` (new samples: never seen, not settled); never shrinks."""
        n = int(num_samples)
        if n < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples!r}")
        extra = n - len(self)
        if extra <= 0:
            return
        self.settled = torch.cat([self.settled, torch.zeros(extra, dtype=torch.bool)])
        self.last_seen = torch.cat([self.last_seen, torch.full((extra,), -1, dtype=torch.long)])
        self.passes = torch.cat([self.passes, torch.zeros(extra, dtype=torch.long)])

    def _indices(self, indices: torch.Tensor | Any) -> torch.Tensor:
        idx = torch.as_tensor(indices).detach().to("cpu").reshape(-1)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"sample indices must be integers, got dtype {idx.dtype}")
        idx = idx.long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(
                f"sample index out of range: got indices in [{int(idx.min())}, {int(idx.max())}] "
                f"but the tracker holds {len(self)} samples (call resize(n) first)"
            )
        return idx

    def update(
        self, indices: torch.Tensor | Any, settled: torch.Tensor | Any, epoch: int | None = None
    ) -> None:
        """Record that the samples ``indices`` were just presented and whether each was settled."""
        idx = self._indices(indices)
        flags = torch.as_tensor(settled).detach().to("cpu").reshape(-1).bool()
        if flags.numel() != idx.numel():
            raise ValueError(
                f"got {idx.numel()} sample indices but {flags.numel()} settled flags: "
                "they must match one to one"
            )
        self.settled[idx] = flags
        self.last_seen[idx] = self.epoch if epoch is None else int(epoch)
        self.passes.index_add_(0, idx, torch.ones_like(idx))

    def observe(
        self,
        indices: torch.Tensor,
        logits: torch.Tensor,
        target: torch.Tensor,
        margin: float | torch.Tensor,
        ignore_index: int = -100,
    ) -> torch.Tensor:
        """:func:`~hem_plugins.settled_mask` of a ``(N, C)`` batch, then :meth:`update`.

        Returns the mask (on the logits' device).
        """
        mask = settled_mask(logits, target, margin, ignore_index=ignore_index)
        if mask.dim() != 1:
            raise ValueError(
                f"observe() takes one row per sample, (N, C) logits; got logits of shape "
                f"{tuple(logits.shape)}. For images, reduce the mask per image and call update()."
            )
        self.update(indices, mask)
        return mask

    def plan(
        self,
        revisit_every: int | None = 5,
        revisit_prob: float = 0.0,
        generator: torch.Generator | None = None,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """Bool mask of the samples that ``epoch`` (default: :attr:`epoch`) presents.

        A sample is presented when it is not settled, was never seen, was last
        seen ``revisit_every`` or more epochs ago (``None``: never by age), or
        wins a draw of probability ``revisit_prob``.
        """
        check_revisit(revisit_every, revisit_prob)
        epoch = self.epoch if epoch is None else int(epoch)
        present = ~self.settled | (self.last_seen < 0)
        if revisit_every is not None:
            present |= (epoch - self.last_seen) >= revisit_every
        if revisit_prob > 0:
            present |= torch.rand(len(self), generator=generator) < revisit_prob
        return present

    @property
    def num_settled(self) -> int:
        return int(self.settled.sum())

    @property
    def fraction_settled(self) -> float:
        return self.num_settled / max(len(self), 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "settled": self.settled.clone(),
            "last_seen": self.last_seen.clone(),
            "passes": self.passes.clone(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"settled", "last_seen", "passes", "epoch"} - set(state)
        if missing:
            raise KeyError(f"SettledTracker state_dict lacks {sorted(missing)}")
        n = len(state["settled"])
        if len(state["last_seen"]) != n or len(state["passes"]) != n:
            raise ValueError("SettledTracker state_dict has tensors of different lengths")
        self.settled = torch.as_tensor(state["settled"]).bool().cpu().clone()
        self.last_seen = torch.as_tensor(state["last_seen"]).long().cpu().clone()
        self.passes = torch.as_tensor(state["passes"]).long().cpu().clone()
        self.epoch = int(state["epoch"])


class SkipSettledSampler(Sampler[int]):
    """Yields, each epoch, the indices that :meth:`SettledTracker.plan` presents.

    Each ``iter()`` is one epoch. The sampler counts epochs by itself (0, 1,
    2, ...) unless :meth:`set_epoch` is called before an epoch (as with
    ``DistributedSampler``); it stamps that epoch on the tracker, so the
    :meth:`SettledTracker.update` calls of the epoch record it. ``len()`` is
    the number of samples of the epoch in progress or, between epochs, of the
    next one (its plan is fixed when first asked for).
    An epoch in which every sample is settled and none is due is empty.

    Args:
        tracker: the :class:`SettledTracker`, one entry per sample of the dataset.
        revisit_every: present a settled sample again this many epochs after it
            was last seen (``None``: only by ``revisit_prob``; 1: skip nothing).
        revisit_prob: probability that a settled sample is presented anyway in
            any given epoch.
        shuffle: random order (else increasing index).
        seed: the plan and order of epoch ``e`` depend on ``(seed, e)`` only.

    Not distributed: every rank would present the same samples.
    """

    def __init__(
        self,
        tracker: SettledTracker,
        revisit_every: int | None = 5,
        revisit_prob: float = 0.0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(tracker, SettledTracker):
            raise TypeError(f"tracker must be a SettledTracker, got {type(tracker).__name__}")
        check_revisit(revisit_every, revisit_prob)
        self.tracker = tracker
        self.revisit_every = revisit_every
        self.revisit_prob = float(revisit_prob)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = -1  # the epoch of the last iter(); the first is 0
        self._requested: int | None = None
        self._cache: tuple[int, torch.Tensor] | None = None
        self._in_progress: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` epoch ``epoch``."""
        self._requested = int(epoch)

    def _upcoming(self) -> int:
        return self._requested if self._requested is not None else self.epoch + 1

    def indices(self, epoch: int) -> torch.Tensor:
        """The indices epoch ``epoch`` presents, in order, from the tracker's state now."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        present = self.tracker.plan(self.revisit_every, self.revisit_prob, gen, epoch=epoch)
        idx = torch.nonzero(present).flatten()
        if self.shuffle:
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
        self._cache = (epoch, idx)
        return idx

    def __iter__(self) -> Iterator[int]:
        epoch = self._upcoming()
        idx = self.indices(epoch)
        self.epoch, self._requested = epoch, None
        self.tracker.epoch = epoch
        self._in_progress = idx.numel()
        return self._yield(idx.tolist())

    def _yield(self, order: list[int]) -> Iterator[int]:
        yield from order
        self._in_progress = None

    def __len__(self) -> int:
        if self._in_progress is not None:  # inside an epoch: its own length
            return self._in_progress
        return int(self.indices(self._upcoming()).numel())

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.seed, "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        self._requested, self._cache, self._in_progress = None, None, None
        self.tracker.load_state_dict(state["tracker"])


class IndexedDataset(Dataset):
    """A dataset whose items end with their own index: ``(*item, index)``.

    A tuple or list item gains the index as its last element; any other item
    becomes ``(item, index)``. The default collate then gives a batch of
    indices beside the batch of data.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([4, 5, 6])))
        >>> x, y, i = ds[2]
        >>> (int(y), i)
        (6, 2)
    """

    def __init__(self, dataset: Dataset) -> None:
        if not isinstance(dataset, Sized):
            raise TypeError(f"IndexedDataset needs a map-style dataset with len(), got {dataset!r}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, (tuple, list)):
            return (*item, index)
        return (item, index)
