"""``ExperienceMarginsPlugin``: keeps the criterion's HEM / HEM+ margins in step with each experience."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_results import MetricValue
from avalanche.models import IncrementalClassifier, MultiHeadClassifier
from avalanche.training.plugins import ReplayPlugin
from torch import nn

from ..modules import HEMLoss, HEMPlusLoss

__all__ = ["ExperienceMarginsPlugin", "count_classes", "training_datasets"]


def _targets(dataset) -> torch.Tensor:
    """Integer class labels of an Avalanche dataset (its ``targets`` attribute), as a 1-D tensor."""
    if dataset is None or len(dataset) == 0:
        return torch.zeros(0, dtype=torch.long)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"ExperienceMarginsPlugin: the training dataset {type(dataset).__name__} has no `targets` "
            "attribute to count classes from (an Avalanche classification dataset has one)"
        )
    return torch.as_tensor(list(targets), dtype=torch.long).flatten()


def training_datasets(strategy) -> list:
    """The datasets a strategy trains on in the current experience, each sample once.

    The strategy's ``adapted_dataset`` (the experience's data, or what the
    strategy made of it: Cumulative's union, GDumb's buffer) plus the buffer of
    every ``ReplayPlugin`` (which replays through the data loader, so the
    buffer is not part of the adapted dataset). Buffers that serve only as
    gradient constraints (GEM, A-GEM) are not trained on and not counted.
    """
    datasets = [strategy.adapted_dataset]
    for plugin in strategy.plugins:
        if isinstance(plugin, ReplayPlugin):
            buffer = plugin.storage_policy.buffer
            if buffer is not None and len(buffer) > 0:
                datasets.append(buffer)
    return datasets


def count_classes(datasets: Iterable, minlength: int = 0) -> torch.Tensor:
    """Per-class sample counts ``(C,)`` (float64) over ``datasets``; ``C >= minlength``."""
    labels = [_targets(d) for d in datasets]
    t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(
            f"ExperienceMarginsPlugin: negative class label {int(t.min())} in the training data"
        )
    return torch.bincount(t, minlength=minlength).to(torch.float64)


def _masked_heads(model: nn.Module) -> set[float]:
    """``mask_value`` of every masking ``IncrementalClassifier`` / ``MultiHeadClassifier``."""
    values = set()
    for module in model.modules():
        if isinstance(module, IncrementalClassifier | MultiHeadClassifier) and module.masking:
            values.add(float(module.mask_value))
    return values


class ExperienceMarginsPlugin(SupervisedPlugin):
    """Sets the margins of a HEM / HEM+ criterion from each experience's training data.

    Before each training experience it counts the classes of the data the
    strategy will train on in it: the experience's (adapted) dataset plus any
    replay buffer, each sample once (:func:`training_datasets`). Then

    * :class:`~hem_plugins.HEMPlusLoss`: ``set_class_counts(counts)``, so
      ``mu[c] = sqrt(scale / (n * s[c]))`` with ``n`` the classes present in
      that data (:func:`~hem_plugins.class_margins`);
    * :class:`~hem_plugins.HEMLoss` on its automatic margin (no ``margin=``
      given): ``set_num_samples(len(data))``, ``mu = sqrt(scale / n_train)``.
      A margin fixed by hand is left alone.

    The margins are published through the strategy's evaluator as metric
    values ``HEM_Margin/Class{c}`` (HEM+) or ``HEM_Margin/All`` (HEM), plus
    ``HEM_NumSamples``, with the training-experience index as x, so they reach
    the text/interactive and TensorBoard loggers and
    ``evaluator.get_all_metrics()``; :attr:`history` keeps one record per experience.

    Dynamic heads: after every forward pass (training and evaluation), before
    the criterion runs, the counts are padded with zeros to the width of the
    model's output (a class never seen gets a margin that no row uses), and
    when the model holds masking ``IncrementalClassifier`` /
    ``MultiHeadClassifier`` heads whose ``mask_value`` is not the criterion's,
    the criterion's ``mask_value`` is set to theirs, so masked units never move
    the loss threshold.

    Example::

        criterion = HEMPlusLoss()
        strategy = Replay(model, optimizer, criterion, mem_size=200,
                          plugins=[ExperienceMarginsPlugin()])
    """

    def __init__(self) -> None:
        super().__init__()
        #: One dict per training experience: experience index, counts, num_samples, margins.
        self.history: list[dict] = []
        self._counts: torch.Tensor | None = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _criterion(strategy) -> HEMLoss | HEMPlusLoss | None:
        crit = getattr(strategy, "_criterion", None)
        return crit if isinstance(crit, HEMLoss | HEMPlusLoss) else None

    def _fit_width(self, crit: HEMPlusLoss, width: int) -> None:
        """Give the criterion counts of exactly ``width`` classes (zero-padded)."""
        counts = self._counts
        if counts is None or width <= 0 or crit.class_counts.numel() == width:
            return
        if counts.numel() > width:
            if bool((counts[width:] > 0).any()):
                raise ValueError(
                    f"ExperienceMarginsPlugin: the training data has labels up to {counts.numel() - 1} "
                    f"but the model outputs only {width} units"
                )
            counts = counts[:width]
        else:
            counts = torch.cat([counts, counts.new_zeros(width - counts.numel())])
        crit.set_class_counts(counts)

    def _sync_mask_value(self, strategy, crit: HEMLoss | HEMPlusLoss) -> None:
        values = _masked_heads(strategy.model)
        if crit.mask_value is None or not values:
            return
        if len(values) > 1:
            raise ValueError(
                f"ExperienceMarginsPlugin: the model's masking heads use different mask_value {sorted(values)};"
                " the criterion can leave only one value out of its threshold"
            )
        crit.mask_value = values.pop()

    # ---------------------------------------------------------------- callbacks
    def before_training_exp(self, strategy, **kwargs) -> None:
        crit = self._criterion(strategy)
        if crit is None:
            return
        self._sync_mask_value(strategy, crit)
        datasets = training_datasets(strategy)
        counts = count_classes(datasets)
        n = float(counts.sum())
        if n == 0:
            return
        exp = int(strategy.clock.train_exp_counter)
        record = {"experience": exp, "num_samples": int(n), "class_counts": counts.tolist()}
        if isinstance(crit, HEMPlusLoss):
            self._counts = counts
            crit.set_class_counts(counts)
            margins = crit.margins.detach().cpu()
            present = (crit.class_counts > 0).cpu()
            record["margins"] = {
                int(c): float(margins[c]) for c in torch.nonzero(present).flatten()
            }
            values = {f"HEM_Margin/Class{c:03d}": m for c, m in record["margins"].items()}
        else:
            if bool(crit.margin_is_set) and float(crit.num_samples) == 0:
                record["margin"] = float(crit.margins)  # fixed by hand: leave it
            else:
                crit.set_num_samples(n)
                record["margin"] = float(crit.margins)
            values = {"HEM_Margin/All": record["margin"]}
        values["HEM_NumSamples"] = n
        self.history.append(record)
        evaluator = getattr(strategy, "evaluator", None)
        if evaluator is not None:
            for name, value in values.items():
                evaluator.publish_metric_value(MetricValue(self, name, float(value), exp))

    def _after_any_forward(self, strategy) -> None:
        crit = self._criterion(strategy)
        out = strategy.mb_output
        if isinstance(crit, HEMPlusLoss) and isinstance(out, torch.Tensor) and out.dim() >= 2:
            self._fit_width(crit, int(out.shape[1]))

    def after_forward(self, strategy, **kwargs) -> None:
        self._after_any_forward(strategy)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        self._after_any_forward(strategy)

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The per-experience records and the class counts of the current experience."""
        counts = None if self._counts is None else self._counts.clone()
        return {"history": [dict(r) for r in self.history], "counts": counts}

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(r) for r in state["history"]]
        counts = state.get("counts")
        self._counts = None if counts is None else torch.as_tensor(counts, dtype=torch.float64)
