"""Progress bars on stderr (Rich); silent when quiet or when stderr is not a terminal-like sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


@contextmanager
def counting(description: str, quiet: bool, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a bar (or a counter when the total is unknown)."""
    if quiet:
        yield lambda n: None
        return
    with _progress() as bar:
        task = bar.add_task(description, total=total, status="")
        yield lambda n: bar.advance(task, n)


class live_bar:
    """A bar updated to an absolute position with a status line, e.g. per epoch."""

    def __init__(self, description: str, total: int, quiet: bool, completed: int = 0) -> None:
        self.quiet = quiet
        self.progress = None if quiet else _progress()
        self.description, self.total, self.completed = description, total, completed

    def __enter__(self) -> live_bar:
        if self.progress:
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.total,
                                               completed=self.completed, status="")
        return self

    def update(self, completed: int, status: str = "") -> None:
        if self.progress:
            self.progress.update(self.task, completed=completed, status=status)

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.__exit__(None, None, None)
