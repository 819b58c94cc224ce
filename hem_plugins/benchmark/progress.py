"""The benchmark's progress display: a bar on a terminal, plain lines anywhere else.

On a terminal (rich's ``Console.is_terminal``) a rich progress bar is redrawn in
place. Written to a file or a pipe (a CI log, ``| tee``), a bar cannot be redrawn
and rich would print it once, cut to 80 columns; there the display writes plain
lines instead, ``[12/345, 0:01:23] segmentation hem lr 0.05 4 it seed 0``, at
most one every ``interval`` seconds (the first and the last always). Either
way :meth:`ProgressDisplay.line` prints a line of its own (a finished task's).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Progress of ``total`` units on ``file`` (default: ``sys.stdout`` when made).

    Use as a context manager; :meth:`advance` once per unit, with what it is.
    ``enabled=False`` shows no progress, only :meth:`line`'s lines.
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool = True,
        file: TextIO | None = None,
        interval: float = 10.0,
    ) -> None:
        from rich.console import Console

        # The stream now: while tasks run, sys.stdout may be sent to their log.
        self.file = file if file is not None else sys.stdout
        self.console = Console(file=self.file)
        self.total, self.enabled, self.interval = int(total), bool(enabled), float(interval)
        self.done = 0
        self._bar = self._job = None
        self._start = self._last = 0.0

    @property
    def plain(self) -> bool:
        """True when progress is written as plain lines (the output is not a terminal)."""
        return self.enabled and not self.console.is_terminal

    def __enter__(self) -> ProgressDisplay:
        self._start = time.perf_counter()
        self._last = -float("inf")
        if self.enabled and not self.plain:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description:<60}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.__enter__()
            self._job = self._bar.add_task("benchmark", total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def advance(self, description: str, n: int = 1) -> None:
        """``n`` units more: the bar moves (terminal), or a plain line is written (not one)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(self._job, advance=n, description=description)
        elif self.plain:
            now = time.perf_counter()
            if now - self._last >= self.interval or self.done >= self.total:
                self._last = now
                elapsed = time.strftime("%H:%M:%S", time.gmtime(now - self._start))
                width = len(str(self.total))
                print(f"[{self.done:>{width}}/{self.total}, {elapsed}] {description}",
                      file=self.file, flush=True)  # fmt: skip

    def line(self, text: str) -> None:
        """Print ``text`` as one line, above the bar on a terminal."""
        if self._bar is not None or self.console.is_terminal:
            self.console.print(text, soft_wrap=True, highlight=False, markup=False)
        else:
            print(text, file=self.file, flush=True)
