"""The run loop the classification tasks share: load -> select -> train -> predict -> record.

:meth:`ClassificationTask.run_seed` loads each dataset of the settings, asks the task for
its runs on it (:meth:`~ClassificationTask.runs`: the split a run trains on, its loss,
selection key and group), chooses each run's hyper-parameters on a validation carve of
the training data and trains it (:func:`..training.train_selected`), and hands the trained
model to the task's :meth:`~ClassificationTask.records`, which predicts and measures. A
task supplies those two methods and ``units``; the seeds, the data, the selection and the
progress bar are the loop's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from ..config import model_cfg_for, train_cfg_for
from ..data import Split, load_dataset
from ..protocol import run_seeds
from ..training import run_extra, run_metrics, train_selected
from .base import BaseTask, Context


@dataclass
class ClassificationRun:
    """One training of a classification task, as the task lays it out."""

    #: The data: a validation carve of its training set selects, the rest trains.
    split: Split
    loss: str
    #: The selection key (:func:`..protocol.selection_key`), unique within the task.
    key: str
    #: The ``group`` of the run's records.
    group: dict
    #: What trains, for the progress bar (``"digits IR=10 hem"``).
    label: str
    #: The settings the run trains with (the task's, with e.g. its loss options overlaid).
    settings: dict
    #: What the task's :meth:`~ClassificationTask.records` needs besides the split.
    data: dict = field(default_factory=dict)
    #: The selection key of an earlier run of the same dataset and seed whose chosen
    #: hyper-parameters this run trains with (nothing is selected for it); None: it selects.
    params_from: str | None = None


@dataclass
class Trained:
    """A run after selection and training: the chosen model, its history and the training
    part it saw (the split's training data less the validation carve)."""

    model: nn.Module
    hist: dict
    part: Split
    data_seed: int
    init_seed: int

    def health(self, margin_loss: bool) -> dict:
        """``train_acc``, ``diverged`` and, for a margin loss, its diagnostics
        (:func:`..training.run_metrics`)."""
        return run_metrics(self.hist, margin_loss)

    def extra(self) -> dict:
        """The chosen hyper-parameters, the margin and the seeds (:func:`..training.run_extra`)."""
        return run_extra(self.hist, self.part.n_train, self.data_seed, self.init_seed)


class ClassificationTask(BaseTask):
    """A task whose runs train the suite's model on one dataset with one loss each."""

    #: What the validation split scores the selection grid by: ``acc`` or ``balanced_acc``.
    selection_metric = "acc"
    #: Whether training records the margin diagnostics on the split's test data
    #: (``gap_over_margin`` per epoch).
    test_diagnostics = False

    @abstractmethod
    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        """The task's runs on ``dataset`` (loaded with ``data_seed``), in order."""

    @abstractmethod
    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        """What the task measures of a trained run: its records."""

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        data_seed, init_seed = run_seeds(settings, seed)
        recs = []
        for ds in settings["datasets"]:
            full = load_dataset(
                ds, data_seed, settings.get("dataset_options", {}).get(ds), ctx.data_root
            )
            chosen: dict[str, dict] = {}  # selection key -> the run's selection record
            for run in self.runs(settings, ds, full, data_seed):
                ctx.advance(f"{self.name} {run.label} seed {seed}")
                test = (run.split.x_test, run.split.y_test) if self.test_diagnostics else None
                if run.params_from is not None and run.params_from not in chosen:
                    raise ValueError(
                        f"{self.name}: run {run.key!r} trains with the values chosen for "
                        f"{run.params_from!r}, which no earlier run of {ds} selected"
                    )
                model, hist, part = train_selected(
                    run.settings, self.name, run.key, run.split, run.loss,
                    train_cfg_for(settings, ds), model_cfg_for(settings, ds), data_seed,
                    init_seed, ctx.device, metric=self.selection_metric, diagnostics=test,
                    fixed=None if run.params_from is None else chosen[run.params_from],
                )  # fmt: skip
                chosen[run.key] = hist["selection"]
                recs += self.records(run, Trained(model, hist, part, data_seed, init_seed), ctx)
        return {"records": recs}
