"""Avalanche plugin that stops training on samples HEM has already settled (docs/skip_settled.md).

Avalanche 0.6's strategies and ``ReplayPlugin`` build their training loaders,
and samplers, themselves, so the plugin wraps whatever loader the strategy
ends up with (in ``before_training_epoch``) and drops the rows that the
epoch's plan (:meth:`hem_plugins.skipping.SettledTracker.plan`) skips. By
default (``keep_steps=True``, ``recheck=True``) it first re-checks each
skipped row with a forward pass without gradient
(:func:`hem_plugins.skipping.recheck`), presents the rows that are no longer
settled, keeps every batch (as many optimiser steps as full training) and
counts the rows it left out in HEM's threshold
(:func:`hem_plugins.skipping.pad_settled`): each step then gets the loss and
gradient of the full batch, for models without BatchNorm or dropout.
``revisit_every=5, keep_steps=False, recheck=False`` is the first policy:
kept rows repacked into full batches (fewer steps), revisits, no re-check.

Sample identity, with no set-up: in ``after_train_dataset_adaptation``
(before the loaders are built) the plugin replaces ``strategy.adapted_dataset``
by the same dataset with each row's id as one more data attribute and a
collate function that appends the ids as a last int64 column (-1 where an
item has none), which the loader wrapper takes out again, so ``mbatch`` stays
``(x, y, task_label)``. Rows it cannot identify (a replay buffer's, built from
``experience.dataset``) are always presented and counted as ``unidentified``.
Global ids across experiences, buffer included: :func:`with_sample_ids` on the
training set before the benchmark generator. See ``docs/design.md``.

Example::

    skip = SkipSettledPlugin()
    strategy = Naive(model, opt, HEMLoss(), plugins=[ExperienceMarginsPlugin(), skip])
    ...
    skip.history      # per epoch: rows presented, loaded, rechecked, unidentified, settled
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.core import SupervisedPlugin
from avalanche.models.utils import avalanche_forward

from hem_plugins.margins import FALLBACK_MARGIN
from hem_plugins.skipping import SettledTracker, check_revisit, pad_settled, recheck

__all__ = ["ROW_ID", "SAMPLE_ID", "SkipSettledPlugin", "with_sample_ids"]

#: Name of the data attribute that holds each training sample's id.
SAMPLE_ID = "sample_id"


def with_sample_ids(dataset: AvalancheDataset, name: str = SAMPLE_ID) -> AvalancheDataset:
    """The same dataset (same class) with ``name`` = ``0 .. len-1`` as a getitem attribute.

    Optional: :class:`SkipSettledPlugin` numbers each experience's rows by
    itself. Global ids track a sample across experiences (a replay buffer's
    rows included): call this on the whole training set before a benchmark
    generator splits it, so that ids are unique across experiences.
    """
    if not isinstance(dataset, AvalancheDataset):
        raise TypeError(
            "with_sample_ids needs an AvalancheDataset (e.g. from "
            "_make_taskaware_tensor_classification_dataset), got " + type(dataset).__name__
        )
    if name in getattr(dataset, "_data_attributes", {}):
        raise ValueError(f"the dataset already has a data attribute named {name!r}")
    ids = DataAttribute(torch.arange(len(dataset)), name, use_in_getitem=True)
    return dataset.__class__([dataset], data_attributes=[ids])


def _id_position(dataset: Any, name: str) -> int | None:
    """Position of the ``name`` attribute in the dataset's items, or None if it has none."""
    attrs = getattr(dataset, "_data_attributes", None)
    if not attrs or name not in attrs or not attrs[name].use_in_getitem:
        return None
    in_getitem = [k for k, v in attrs.items() if v.use_in_getitem]
    if len(dataset) == 0:
        return None
    item = dataset[0]
    if not isinstance(item, (tuple, list)):
        raise TypeError(
            f"SkipSettledPlugin needs datasets whose items are tuples, got {type(item).__name__}"
        )
    return len(item) - len(in_getitem) + in_getitem.index(name)


#: Name of the data attribute the plugin adds to the adapted training dataset.
ROW_ID = "_skip_settled_row_id"


class _RowId(int):
    """A row's id as the plugin tags it: an ``int`` the collate function can tell apart."""

    __slots__ = ()


class _RowIdCollate:
    """Collate of a tagged dataset: takes each item's :class:`_RowId` out and appends the ids.

    The items keep the layout they had before tagging and go to the dataset's
    own collate function; the ids follow as one int64 column, -1 for an item
    that has none (a replay buffer's row in Avalanche's ``ReplayDataLoader``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, items: list) -> list:
        ids, plain = [-1] * len(items), []
        for i, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                for j in range(len(item) - 1, -1, -1):
                    if type(item[j]) is _RowId:
                        ids[i] = int(item[j])
                        item = [*item[:j], *item[j + 1 :]]
                        break
            plain.append(item)
        batch = self.inner(plain)
        if not isinstance(batch, (list, tuple)):
            raise TypeError(
                "SkipSettledPlugin needs a training collate_fn that returns a list or tuple "
                f"(x, y, task_label, ...), got {type(batch).__name__}"
            )
        return [*batch, torch.tensor(ids, dtype=torch.long)]


def _tag_rows(dataset: AvalancheDataset, first_id: int) -> AvalancheDataset:
    """``dataset`` (same class) whose rows carry ids ``first_id + i``, collated as a last column."""
    tags = DataAttribute([_RowId(first_id + i) for i in range(len(dataset))], ROW_ID, True)
    return dataset.__class__(
        [dataset], data_attributes=[tags], collate_fn=_RowIdCollate(dataset.collate_fn)
    )


class _SkippingLoader:
    """Wraps a training loader: drops the rows ``keep`` rejects (and ``check`` confirms).

    ``take_ids(batch) -> (batch, ids)`` takes the id column out of a batch,
    ``keep(ids) -> mask`` says which rows to present and ``check(batch, mask)
    -> (mask, n)`` re-checks the skipped ones (the plugin's methods). With
    ``repack`` the kept rows are packed into full batches, else each batch keeps
    its own (``skipped`` rows left out of the last one). Counts per pass:
    ``loaded``, ``presented``, ``checked``, ``unidentified`` (id -1) rows;
    ``batch_ids``: the ids of the last batch handed out.
    """

    def __init__(self, inner: Any, take_ids, keep, repack: bool = True, check=None) -> None:
        self.inner, self.repack, self.skipped, self.check, self.checked = inner, repack, 0, check, 0
        self.take_ids, self.keep, self.kept_fraction = take_ids, keep, 1.0
        self.loaded = self.presented = self.unidentified = 0
        self.batch_ids: torch.Tensor | None = None

    def __len__(self) -> int:  # an estimate, for progress bars
        return max(1, math.ceil(len(self.inner) * (self.kept_fraction if self.repack else 1)))

    def __iter__(self):
        self.loaded = self.presented = self.unidentified = self.checked = 0
        size = None
        pending: list[list[torch.Tensor]] = []
        count = 0
        for batch in self.inner:
            batch, ids = self.take_ids(list(batch))
            size = size or ids.numel()
            keep = self.keep(ids)
            if self.check is not None:
                keep, n = self.check(batch, keep)
                self.checked += n
            self.loaded += ids.numel()
            if not self.repack:  # each batch, skipped rows dropped: as many steps as full training
                self.skipped = int((~keep).sum())
                yield self._emit([*(b[keep.to(b.device)] for b in batch), ids[keep]])
                continue
            if not bool(keep.any()):
                continue
            if not bool(keep.all()):
                batch = [b[keep.to(b.device)] for b in batch]
                ids = ids[keep]
            pending.append([*batch, ids])
            count += ids.numel()
            while count >= size:
                out, pending, count = _split(pending, size)
                yield self._emit(out)
        # A short last batch follows the wrapped loader's drop_last (e.g. for BatchNorm).
        if count and not getattr(self.inner, "drop_last", False):
            yield self._emit([torch.cat(parts) for parts in zip(*pending, strict=True)])

    def _emit(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        self.batch_ids = batch.pop()
        self.presented += self.batch_ids.numel()
        self.unidentified += int((self.batch_ids < 0).sum())
        return batch


def _split(pending: list[list[torch.Tensor]], size: int):
    joined = [torch.cat(parts) for parts in zip(*pending, strict=True)]
    rest = [t[size:] for t in joined]
    return [t[:size] for t in joined], ([rest] if rest[-1].numel() else []), rest[-1].numel()


class SkipSettledPlugin(SupervisedPlugin):
    """Skip the training samples that HEM has settled, at no cost in accuracy by default.

    ``plugins=[SkipSettledPlugin()]`` needs no set-up (module docstring). After
    each forward pass it marks each row settled or not
    (:func:`hem_plugins.settled_mask`, the criterion's margins) in a
    :class:`~hem_plugins.skipping.SettledTracker`; each epoch (counted across
    experiences) presents the samples not settled or never seen, those last
    seen ``revisit_every`` or more epochs ago, and others with probability
    ``revisit_prob``. Criterion: :class:`~hem_plugins.HEMLoss` /
    :class:`~hem_plugins.HEMPlusLoss` (or give ``margin``). Not distributed.

    Args:
        revisit_every: epochs after which a settled sample is trained on again; default
            ``None``, never (``recheck`` checks each skipped row every epoch; without
            it, give one, e.g. 5). revisit_prob: per-epoch chance of training it anyway.
        margin: to test rows against; default the criterion's ``margins``.
        reset_on_new_experience: forget, at each experience, which samples were settled.
        skip_replayed: also skip settled rows of other experiences (a replay
            buffer's, with global ids); default False (measured to cost accuracy).
        id_attribute: data attribute of global ids (:func:`with_sample_ids`).
        seed: the random revisits of epoch ``e`` depend on ``(seed, e)``.
        keep_steps: keep every batch, less its skipped rows (as many optimiser
            steps as full training), and count those rows in HEM's threshold
            (:func:`~hem_plugins.skipping.pad_settled`). False: repack full batches.
        recheck: before skipping rows, check them with a forward pass without
            gradient and present those no longer settled
            (:func:`~hem_plugins.skipping.recheck`; counted as ``rechecked``).

    Attributes:
        tracker: the :class:`~hem_plugins.skipping.SettledTracker`.
        history: per training epoch: ``experience``, ``epoch``, ``presented``
            (rows trained on), ``loaded``, ``rechecked`` (forward-only passes),
            ``unidentified`` (always presented), ``fraction_settled`` (of the
            samples seen in this experience).
    """

    def __init__(
        self,
        revisit_every: int | None = None,
        revisit_prob: float = 0.0,
        margin: float | torch.Tensor | None = None,
        reset_on_new_experience: bool = True,
        skip_replayed: bool = False,
        id_attribute: str = SAMPLE_ID,
        seed: int = 0,
        keep_steps: bool = True,
        recheck: bool = True,
    ) -> None:
        super().__init__()
        check_revisit(revisit_every, revisit_prob)
        self.revisit_every = revisit_every
        self.revisit_prob = float(revisit_prob)
        self.margin = margin
        self.reset_on_new_experience = reset_on_new_experience
        self.skip_replayed = skip_replayed
        self.id_attribute = id_attribute
        self.seed, self.keep_steps, self._unpadded = int(seed), bool(keep_steps), None
        self.recheck, self._strategy = bool(recheck), None
        self.tracker = SettledTracker()
        self.epoch = -1
        self.history: list[dict[str, Any]] = []
        # Per experience, set up again by the callbacks below.
        self._plan = torch.zeros(0, dtype=torch.bool)
        self._exp_ids = torch.zeros(0, dtype=torch.long)
        self._current = torch.zeros(0, dtype=torch.bool)
        self._exp_start = 0
        self._train_pos: int | None = None  # column of the global ids (with_sample_ids)
        self._tagged: AvalancheDataset | None = None  # the adapted dataset the plugin tagged
        self._eval_pos: int | None = None
        self._loader: _SkippingLoader | None = None

    def take_ids(self, batch: list) -> tuple[list, torch.Tensor]:
        """Take the id column out of a training batch: ``(batch, ids)``, ids -1 where unknown."""
        if self._train_pos is not None:
            ids = batch.pop(self._train_pos)
        elif self._tagged is not None:
            ids = batch.pop()
        else:
            return batch, torch.full((len(batch[0]),), -1, dtype=torch.long)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
            raise RuntimeError(
                "SkipSettledPlugin: the training batch has no column of sample ids where the "
                f"plugin put one (got {type(ids).__name__}); a loader that does not use the "
                "training dataset's collate_fn drops it"
            )
        return batch, ids.to("cpu").long()

    def keep(self, ids: torch.Tensor) -> torch.Tensor:
        """Which rows of a batch (by id) this epoch presents; unidentified rows (-1) always."""
        keep = torch.ones(ids.numel(), dtype=torch.bool)
        known = ids >= 0
        if not bool(known.any()):
            return keep
        ids = ids[known]
        self.tracker.resize(int(ids.max()) + 1)
        n = len(self.tracker)
        if self._plan.numel() < n:  # ids the plan did not know: present them
            self._plan = torch.cat(
                [self._plan, torch.ones(n - self._plan.numel(), dtype=torch.bool)]
            )
        if self._current.numel() < n:
            self._current = torch.cat(
                [self._current, torch.zeros(n - self._current.numel(), dtype=torch.bool)]
            )
        chosen = self._plan[ids]
        if not self.skip_replayed:
            chosen |= ~self._current[ids]
        keep[known] = chosen
        return keep

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        data = strategy.adapted_dataset
        self._train_pos = _id_position(data, self.id_attribute)
        self._tagged = None
        if self._train_pos is not None:  # global ids from with_sample_ids
            ids = torch.as_tensor(list(getattr(data, self.id_attribute))).long()
        else:
            if not isinstance(data, AvalancheDataset):
                raise TypeError(
                    "SkipSettledPlugin needs the strategy's adapted_dataset to be an "
                    f"AvalancheDataset, got {type(data).__name__}"
                )
            first = len(self.tracker)
            ids = torch.arange(first, first + len(data))
            self._tagged = strategy.adapted_dataset = _tag_rows(data, first)
        self._exp_ids = ids
        self.tracker.resize(int(ids.max()) + 1 if ids.numel() else 0)

    def before_training_exp(self, strategy, **kwargs):
        if self._tagged is not None and strategy.adapted_dataset is not self._tagged:
            warnings.warn(
                "SkipSettledPlugin: a plugin listed after it replaced the training data it had "
                "tagged, so no row can be identified and every row is presented. List "
                "SkipSettledPlugin after that plugin.",
                UserWarning,
                stacklevel=2,
            )
            self._tagged = None
        self._current = torch.zeros(len(self.tracker), dtype=torch.bool)
        self._current[self._exp_ids] = True
        self._exp_start = self.epoch + 1
        self._loader = None
        if self.reset_on_new_experience:
            self.tracker.settled.zero_()

    def before_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        self.tracker.epoch = self.epoch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self._plan = self.tracker.plan(self.revisit_every, self.revisit_prob, gen)
        if not isinstance(strategy.dataloader, _SkippingLoader):
            strategy.dataloader = _SkippingLoader(
                strategy.dataloader, self.take_ids, self.keep, not self.keep_steps, self._check
            )
        self._strategy = strategy
        self._loader = strategy.dataloader
        if self._exp_ids.numel():
            self._loader.kept_fraction = float(self._plan[self._exp_ids].float().mean())

    def _margin(self, strategy) -> tuple[float | torch.Tensor, int]:
        crit = strategy._criterion
        ignore_index = getattr(crit, "ignore_index", -100)
        if self.margin is not None:
            return self.margin, ignore_index
        margins = getattr(crit, "margins", None)
        if not isinstance(margins, torch.Tensor):
            raise ValueError(
                "SkipSettledPlugin needs the HEM margin: use HEMLoss / HEMPlusLoss as the "
                f"strategy's criterion (got {type(crit).__name__}) or pass margin=..."
            )
        if margins.numel() == 0:  # HEMPlusLoss before any counts: its fallback margin
            return FALLBACK_MARGIN, ignore_index
        return margins, ignore_index

    def after_forward(self, strategy, **kwargs):
        loader = self._loader
        if loader is None or loader.batch_ids is None:
            return
        ids, loader.batch_ids = loader.batch_ids, None
        margin, ignore_index = self._margin(strategy)
        if self.keep_steps and loader.skipped:  # HEM's threshold counts the skipped rows
            self._unpadded = strategy.mb_output, strategy.mbatch[1]
            padded = pad_settled(strategy.mb_output, strategy.mb_y, loader.skipped, margin)
            strategy.mb_output, strategy.mbatch[1] = padded
        out, y = self._unpadded or (strategy.mb_output, strategy.mb_y)
        out = out.detach()
        known = ids >= 0
        if not bool(known.all()):
            rows = known.to(out.device)
            ids, out, y = ids[known], out[rows], y[rows]
        if ids.numel():
            self.tracker.observe(ids, out, y, margin, ignore_index)

    def _check(self, batch: list, keep: torch.Tensor) -> tuple[torch.Tensor, int]:
        if not self.recheck:
            return keep, 0
        s, (x, y, t) = self._strategy, batch[:3]

        def fwd(rows):
            return avalanche_forward(s.model, x[rows].to(s.device), t[rows].to(s.device))

        return recheck(keep, fwd, y, *self._margin(s), s.model)

    def before_backward(self, strategy, **kwargs):
        if self._unpadded is not None:  # the loss is computed: the batch as it was
            (strategy.mb_output, strategy.mbatch[1]), self._unpadded = self._unpadded, None

    def after_training_epoch(self, strategy, **kwargs):
        seen = self.tracker.last_seen >= self._exp_start  # seen in this experience
        frac = float(self.tracker.settled[seen].float().mean()) if bool(seen.any()) else 0.0
        loader = self._loader
        self.history.append(
            {
                "experience": int(strategy.clock.train_exp_counter),
                "epoch": self.epoch,
                "presented": loader.presented if loader else 0,
                "loaded": loader.loaded if loader else 0,
                "unidentified": loader.unidentified if loader else 0,
                "rechecked": loader.checked if loader else 0,
                "fraction_settled": frac,
            }
        )

    def after_training_exp(self, strategy, **kwargs):
        self._loader = None  # the strategy drops its loader too

    def before_eval_exp(self, strategy, **kwargs):
        self._eval_pos = _id_position(strategy.adapted_dataset, self.id_attribute)

    def before_eval_iteration(self, strategy, **kwargs):
        if self._eval_pos is not None:  # a stream with ids (e.g. the train stream)
            strategy.mbatch.pop(self._eval_pos)

    def state_dict(self) -> dict[str, Any]:
        """Epoch counter, tracker (settled flags, last seen, passes) and history.

        Row ids are the tracker's size at the start of each experience onwards,
        so a restored plugin numbers the next experience's rows after them.
        """
        return {"epoch": self.epoch, "tracker": self.tracker.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.tracker.load_state_dict(state["tracker"])
        self.history = list(state.get("history", []))
