"""Progress of a benchmark run: a bar on a terminal, plain lines otherwise.

On a terminal a ``rich`` progress bar is used when ``rich`` is installed (the ``cli``
extra), else a single line rewritten with ``\\r``. When the output is not a terminal
(a log file, a pipe, CI) every step is one plain line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Base class: ``start(total, cases)``, then ``step(index, case_index, case, operation)`` per
    unit of work (one operation on one case), then ``close()``."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.total = self.cases = 0
        self.begin = time.perf_counter()

    def start(self, total: int, cases: int) -> None:
        self.total, self.cases, self.begin = total, cases, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.begin

    def remaining(self, done: int) -> float | None:
        """Estimated seconds left after ``done`` of ``total`` units (``None`` before the first)."""
        if done == 0:
            return None
        return self.elapsed() / done * (self.total - done)

    def label(self, case_index: int, case: str, operation: str) -> str:
        return f"case {case_index + 1:>{len(str(self.cases))}}/{self.cases} {case} {operation}"

    def describe(self, index: int, case_index: int, case: str, operation: str) -> str:
        left = self.remaining(index)
        remaining = "?" if left is None else _clock(left)
        return f"{self.label(case_index, case, operation)}  elapsed {_clock(self.elapsed())}, remaining ~{remaining}"

    def step(self, index: int, case_index: int, case: str, operation: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SilentProgress(Progress):
    def step(self, index: int, case_index: int, case: str, operation: str) -> None:
        pass


class LineProgress(Progress):
    """One line per step (for logs and pipes)."""

    def step(self, index: int, case_index: int, case: str, operation: str) -> None:
        print(self.describe(index, case_index, case, operation), file=self.stream, flush=True)


class OverwriteProgress(Progress):
    """A single line rewritten in place (a terminal without ``rich``)."""

    width = 0

    def step(self, index: int, case_index: int, case: str, operation: str) -> None:
        line = self.describe(index, case_index, case, operation)
        padding = " " * max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * self.width + "\r")
        self.stream.flush()


class RichProgress(Progress):
    """A ``rich`` progress bar: case i of n, operation, elapsed and remaining time."""

    def start(self, total: int, cases: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        super().start(total, cases)
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("remaining"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("", total=total)

    def step(self, index: int, case_index: int, case: str, operation: str) -> None:
        self.bar.update(self.task, completed=index, description=self.label(case_index, case, operation))

    def close(self) -> None:
        self.bar.update(self.task, completed=self.total)
        self.bar.stop()


def make_progress(stream: TextIO | None = None) -> Progress:
    """The right progress display for ``stream`` (default: standard output)."""
    stream = stream or sys.stdout
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return LineProgress(stream)
    try:
        import rich  # noqa: F401
    except ImportError:
        return OverwriteProgress(stream)
    return RichProgress(stream)
