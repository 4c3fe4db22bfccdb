"""Progress reporting: a transient rich bar on a terminal, nothing when output is piped.

A transfer calls ``reporter.task(description, total=...)`` and ``advance(n)`` on what it yields;
waits use ``unit="wait"`` (a spinner with elapsed time) and ``describe()`` for status changes.
Tests pass their own Reporter (e.g. one that interrupts a download half-way).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, TaskID

Unit = Literal["bytes", "wait"]


class Task(Protocol):
    def advance(self, amount: int) -> None: ...

    def describe(self, text: str) -> None: ...


class Reporter(Protocol):
    def task(
        self, description: str, *, total: int | None, completed: int = 0, unit: Unit = "bytes"
    ) -> AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, amount: int) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class QuietReporter:
    """Reports nothing."""

    @contextmanager
    def task(
        self, description: str, *, total: int | None, completed: int = 0, unit: Unit = "bytes"
    ) -> Iterator[Task]:
        yield _NullTask()


class _RichTask:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task_id, amount)

    def describe(self, text: str) -> None:
        self._progress.update(self._task_id, description=text)


class RichReporter:
    """Transient rich progress bars on stderr: bytes, rate and ETA for transfers; a spinner for waits."""

    @contextmanager
    def task(
        self, description: str, *, total: int | None, completed: int = 0, unit: Unit = "bytes"
    ) -> Iterator[Task]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        columns: tuple[ProgressColumn, ...]
        if unit == "bytes":
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
        else:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task_id = progress.add_task(description, total=total, completed=completed)
            yield _RichTask(progress, task_id)


def auto_reporter(enabled: bool | None = None) -> Reporter:
    """Rich bars when ``enabled`` (None: when stderr is a terminal), else quiet."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichReporter() if enabled else QuietReporter()
