"""The interface of a benchmark task: what the runner and the report call.

:class:`Task` names it. :class:`BaseTask` implements it with the defaults of its optional
parts (no verdict rows, no headline column); every task of :data:`.TASKS` derives from it.
The runner calls ``units`` and ``run_seed`` and stores each seed's result in
``results.json``; the report calls ``render``, ``summary`` and ``headline`` on the stored
result alone, ``result = {"settings", "seeds", "per_seed": {seed: {"records": [...]}}}``.

A record is ``{"group": {...}, "metrics": {name: float}, "extra": {...}}``: ``group`` names
the run (dataset, loss, ...), ``metrics`` are aggregated over seeds by the report
(:func:`.sections.aggregate`), ``extra`` holds what the section shows besides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass
class Context:
    """What a task needs from the runner besides its settings."""

    device: str = "cpu"
    data_root: str | None = None
    work_dir: Path | None = None
    advance: Callable[[str], None] = field(default=lambda desc: None)
    #: mmseg runs keep their final checkpoint (``--keep-checkpoints``); else they write none.
    keep_checkpoints: bool = False


@runtime_checkable
class Task(Protocol):
    """A benchmark task, registered by ``name`` in :data:`hem_plugins.benchmark.tasks.TASKS`."""

    #: The key in ``configs/benchmark/*.py``'s ``tasks`` and in ``--tasks``.
    name: str
    #: The heading of the task's section in ``report.md``.
    title: str

    def units(self, settings: dict) -> int:
        """Trainings per seed (the progress bar's steps)."""
        ...

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        """The runs of one seed: ``{"records": [record, ...]}``; ``ctx.advance`` once per unit."""
        ...

    def render(self, result: dict, out_dir: Path) -> str:
        """The Markdown section of ``report.md``, writing its PNGs into ``out_dir``."""
        ...

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        """``[(paper's claim, {dataset: cell})]``: the task's rows of the claims table."""
        ...

    def headline(self, result: dict, dataset: str | None) -> dict[str, dict[str, str]]:
        """``{column: {loss: cell}}``: the task's columns of the headline table of ``dataset``."""
        ...


class BaseTask(ABC):
    """:class:`Task` with no verdict rows and no headline column unless a task says otherwise,
    and the ``max_seeds`` rule of the costly tasks (:meth:`skip_seed`)."""

    name: str
    title: str

    @abstractmethod
    def units(self, settings: dict) -> int: ...

    @abstractmethod
    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict: ...

    @abstractmethod
    def render(self, result: dict, out_dir: Path) -> str: ...

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        return []

    def headline(self, result: dict, dataset: str | None) -> dict[str, dict[str, str]]:
        return {}

    def skip_seed(self, settings: dict, seed: int, ctx: Context) -> bool:
        """True (and the progress bar advanced) when ``seed`` is beyond ``max_seeds``."""
        if seed in seeds_to_run(settings):
            return False
        for _ in range(self.units(settings)):
            ctx.advance(f"{self.name} seed {seed}: skipped (max_seeds)")
        return True


def seeds_to_run(settings: dict) -> list[int]:
    """The profile's seeds, cut to ``max_seeds`` when the task sets it (costly tasks)."""
    seeds = [int(s) for s in settings.get("seeds", [0])]
    n = settings.get("max_seeds")
    return seeds[: int(n)] if n else seeds
