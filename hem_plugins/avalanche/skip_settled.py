"""Avalanche plugin that stops presenting training samples HEM has already settled.

How it plugs in (Avalanche 0.6.0). A supervised strategy builds its training
loader once per experience (``make_train_dataloader``: a ``DataLoader`` or a
``TaskBalancedDataLoader``), and ``ReplayPlugin`` replaces it in
``before_training_exp`` with a ``ReplayDataLoader`` that draws from the
experience and the replay buffer. Those loaders create their own samplers on
every epoch, so a :class:`torch.utils.data.Sampler` cannot be handed to them
without patching Avalanche. The plugin therefore wraps whatever loader the
strategy ends up with (in ``before_training_epoch``, after every plugin's
``before_training_exp``): each batch's rows that the epoch's plan skips are
dropped, and the kept rows are packed again into full batches of the loader's
batch size, so an epoch takes fewer optimiser steps. The plan is
:meth:`hem_plugins.skipping.SettledTracker.plan`, the same rule as
:class:`~hem_plugins.skipping.SkipSettledSampler`. Skipped samples are still
loaded (cheap for in-memory data); their forward and backward passes are saved.

Sample identity. The plugin needs to know which training sample each row is.
Give every sample of the training data an id before building the benchmark:
:func:`with_sample_ids` adds a ``sample_id`` data attribute returned by
``__getitem__``. Benchmark generators keep data attributes through their
subsets, and the replay buffer is made of the experiences' datasets, so
current and buffered rows carry their global id. The plugin takes the id out
of each batch before the strategy sees it, so ``mbatch`` keeps its usual
``(x, y, task_label)`` layout (also when a stream with ids is evaluated).

Example::

    from hem_plugins import HEMLoss
    from hem_plugins.avalanche.skip_settled import SkipSettledPlugin, with_sample_ids

    train = with_sample_ids(train)               # before nc_benchmark(...)
    benchmark = nc_benchmark(train, test, n_experiences=5, task_labels=False)
    skip = SkipSettledPlugin(revisit_every=5, revisit_prob=0.05)
    strategy = Naive(model, opt, HEMLoss(margin=0.5), plugins=[skip, ReplayPlugin(200)])
    ...
    skip.history      # per epoch: rows presented, fraction of the seen samples settled
"""

from __future__ import annotations

import math
from typing import Any

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.core import SupervisedPlugin

from hem_plugins.margins import FALLBACK_MARGIN
from hem_plugins.skipping import SettledTracker, _check_revisit

__all__ = ["SAMPLE_ID", "SkipSettledPlugin", "with_sample_ids"]

#: Name of the data attribute that holds each training sample's id.
SAMPLE_ID = "sample_id"


def with_sample_ids(dataset: AvalancheDataset, name: str = SAMPLE_ID) -> AvalancheDataset:
    """The same dataset (same class) with ``name`` = ``0 .. len-1`` as a getitem attribute.

    Call it on the whole training set before a benchmark generator splits it,
    so that ids are unique across experiences.
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


class _SkippingLoader:
    """Wraps a training loader: drops the rows the plan skips and repacks full batches."""

    def __init__(self, inner: Any, plugin: SkipSettledPlugin) -> None:
        self.inner = inner
        self.plugin = plugin

    def __len__(self) -> int:  # an estimate, for progress bars
        return max(1, math.ceil(len(self.inner) * self.plugin._kept_fraction))

    def __iter__(self):
        plugin = self.plugin
        pos = plugin._train_pos
        size = None
        pending: list[list[torch.Tensor]] = []
        count = 0
        for batch in self.inner:
            batch = list(batch)
            ids = batch.pop(pos).to("cpu").long()
            size = size or ids.numel()
            plugin.tracker.resize(int(ids.max()) + 1 if ids.numel() else 0)
            keep = plugin._present(ids)
            plugin._loaded += ids.numel()
            if not bool(keep.any()):
                continue
            if not bool(keep.all()):
                batch = [b[keep.to(b.device)] for b in batch]
                ids = ids[keep]
            pending.append([*batch, ids])
            count += ids.numel()
            while count >= size:
                out, pending, count = _split(pending, size)
                yield plugin._emit(out)
        # A short last batch follows the wrapped loader's drop_last (e.g. for BatchNorm).
        if count and not getattr(self.inner, "drop_last", False):
            yield plugin._emit([torch.cat(parts) for parts in zip(*pending, strict=True)])


def _split(pending: list[list[torch.Tensor]], size: int):
    joined = [torch.cat(parts) for parts in zip(*pending, strict=True)]
    out = [t[:size] for t in joined]
    rest = [t[size:] for t in joined]
    n = rest[-1].numel()
    return out, ([rest] if n else []), n


class SkipSettledPlugin(SupervisedPlugin):
    """Skip the training samples that HEM has settled; revisit them to catch regressions.

    After each forward pass the plugin marks each row settled or not
    (:func:`hem_plugins.settled_mask` with the criterion's margins) in a
    :class:`~hem_plugins.skipping.SettledTracker` keyed by the sample's id. At
    the start of each epoch it plans which samples to present: those not
    settled, those never seen, those last seen ``revisit_every`` or more epochs
    ago, and each other one with probability ``revisit_prob``. Epochs are
    counted across experiences. Works with any supervised strategy whose
    criterion is :class:`~hem_plugins.HEMLoss` / :class:`~hem_plugins.HEMPlusLoss`
    (or give ``margin``), Naive and Replay included. The training data must
    carry sample ids: see :func:`with_sample_ids`. Not for distributed
    training (each rank would keep its own tracker).

    Args:
        revisit_every: epochs after which a settled sample is presented again
            (``None``: only by chance).
        revisit_prob: per-epoch probability of presenting a settled sample anyway.
        margin: the margin to test rows against; default: the criterion's
            ``margins`` (a float, or a ``(C,)`` tensor for HEM+).
        reset_on_new_experience: at the start of an experience, forget which
            samples were settled (the replay buffer's samples are presented
            again at least once, as the model has since changed).
        skip_replayed: also skip settled rows that do not belong to the current
            experience (a replay buffer's). Default False: buffered samples are
            always presented, as they are what holds forgetting back
            (``tools/skip_settled.py`` measured skipping them to cost accuracy).
        id_attribute: name of the data attribute holding the sample ids.
        seed: the random revisits of epoch ``e`` depend on ``(seed, e)``.

    Attributes:
        tracker: the :class:`~hem_plugins.skipping.SettledTracker`.
        history: one dict per training epoch: ``experience``, ``epoch``,
            ``presented`` (rows trained on), ``loaded`` (rows the loader gave),
            ``fraction_settled`` (of the samples seen in this experience).
    """

    def __init__(
        self,
        revisit_every: int | None = 5,
        revisit_prob: float = 0.0,
        margin: float | torch.Tensor | None = None,
        reset_on_new_experience: bool = True,
        skip_replayed: bool = False,
        id_attribute: str = SAMPLE_ID,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_revisit(revisit_every, revisit_prob)
        self.revisit_every = revisit_every
        self.revisit_prob = float(revisit_prob)
        self.margin = margin
        self.reset_on_new_experience = reset_on_new_experience
        self.skip_replayed = skip_replayed
        self.id_attribute = id_attribute
        self.seed = int(seed)
        self.tracker = SettledTracker()
        self.epoch = -1
        self.history: list[dict[str, Any]] = []
        self._plan = torch.zeros(0, dtype=torch.bool)
        self._exp_ids = torch.zeros(0, dtype=torch.long)
        self._current = torch.zeros(0, dtype=torch.bool)
        self._exp_start = 0
        self._kept_fraction = 1.0
        self._train_pos: int | None = None
        self._eval_pos: int | None = None
        self._ids: torch.Tensor | None = None
        self._loaded = 0
        self._presented = 0

    # ------------------------------------------------------------------ training
    def before_training_exp(self, strategy, **kwargs):
        pos = _id_position(strategy.adapted_dataset, self.id_attribute)
        if pos is None:
            raise ValueError(
                f"SkipSettledPlugin: the training data has no {self.id_attribute!r} data "
                "attribute, so batches cannot be matched to samples. Wrap the training set "
                "with hem_plugins.avalanche.skip_settled.with_sample_ids(train) before "
                "building the benchmark (and add this plugin from the first experience)."
            )
        self._train_pos = pos
        ids = torch.as_tensor(list(getattr(strategy.adapted_dataset, self.id_attribute)))
        self._exp_ids = ids.long()
        self.tracker.resize(int(ids.max()) + 1 if ids.numel() else 0)
        self._current = torch.zeros(len(self.tracker), dtype=torch.bool)
        self._current[self._exp_ids] = True
        self._exp_start = self.epoch + 1
        if self.reset_on_new_experience:
            self.tracker.settled.zero_()

    def before_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        self.tracker.epoch = self.epoch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self._plan = self.tracker.plan(self.revisit_every, self.revisit_prob, gen)
        if self._exp_ids.numel():
            self._kept_fraction = float(self._plan[self._exp_ids].float().mean())
        self._loaded = self._presented = 0
        if not isinstance(strategy.dataloader, _SkippingLoader):
            strategy.dataloader = _SkippingLoader(strategy.dataloader, self)

    def _present(self, ids: torch.Tensor) -> torch.Tensor:
        n = len(self.tracker)
        if self._plan.numel() < n:  # ids the plan did not know: present them
            self._plan = torch.cat(
                [self._plan, torch.ones(n - self._plan.numel(), dtype=torch.bool)]
            )
        if self._current.numel() < n:
            self._current = torch.cat(
                [self._current, torch.zeros(n - self._current.numel(), dtype=torch.bool)]
            )
        keep = self._plan[ids]
        if not self.skip_replayed:
            keep |= ~self._current[ids]
        return keep

    def _emit(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        self._ids = batch.pop()
        self._presented += self._ids.numel()
        return batch

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
        if self._ids is None:
            return
        margin, ignore_index = self._margin(strategy)
        self.tracker.observe(
            self._ids, strategy.mb_output.detach(), strategy.mb_y, margin, ignore_index
        )
        self._ids = None

    def after_training_epoch(self, strategy, **kwargs):
        seen = self.tracker.last_seen >= self._exp_start  # seen in this experience
        frac = float(self.tracker.settled[seen].float().mean()) if bool(seen.any()) else 0.0
        self.history.append(
            {
                "experience": int(strategy.clock.train_exp_counter),
                "epoch": self.epoch,
                "presented": self._presented,
                "loaded": self._loaded,
                "fraction_settled": frac,
            }
        )

    # ------------------------------------------------------------------ evaluation
    def before_eval_exp(self, strategy, **kwargs):
        self._eval_pos = _id_position(strategy.adapted_dataset, self.id_attribute)

    def before_eval_iteration(self, strategy, **kwargs):
        if self._eval_pos is not None:  # a stream with ids (e.g. the train stream)
            strategy.mbatch.pop(self._eval_pos)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "tracker": self.tracker.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.tracker.load_state_dict(state["tracker"])
        self.history = list(state.get("history", []))
