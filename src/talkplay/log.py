"""Logging and progress: the one place library code reports to the user.

Library code never prints. Use ``get_logger(__name__)`` for messages and
``progress(iterable, total=..., desc=...)`` for long loops; both write to stderr so
``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
# Redirected stderr (a CI log, `2> file`) would get rich's 80 columns, too narrow for the
# evaluation table; a terminal or an explicit COLUMNS keeps its own width.
_PIPED_WIDTH = None if sys.stderr.isatty() or "COLUMNS" in os.environ else 200
stderr_console = Console(stderr=True, width=_PIPED_WIDTH)
_configured = False


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the ``talkplay`` namespace."""
    return logging.getLogger(name if name.startswith("talkplay") else f"talkplay.{name}")


def setup_logging(level: str | int = "INFO") -> None:
    """Send ``talkplay`` logs to stderr through rich; idempotent."""
    global _configured
    root = logging.getLogger("talkplay")
    root.setLevel(level)
    if not _configured:
        handler = RichHandler(console=stderr_console, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.propagate = False
        _configured = True


def progress_enabled() -> bool:
    """Progress bars show unless TALKPLAY_NO_PROGRESS=1 (tests, CI logs)."""
    return os.environ.get("TALKPLAY_NO_PROGRESS", "0") != "1"


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "working") -> Iterator[T]:
    """Yield from ``iterable`` while drawing a progress bar on stderr.

    Call as ``for x in progress(items, total=len(items), desc="encoding"): ...``.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not progress_enabled():
        yield from iterable
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=stderr_console, transient=not sys.stderr.isatty()) as bar:
        task = bar.add_task(desc, total=total, status="")
        for item in iterable:
            yield item
            bar.advance(task)


class ProgressBar:
    """A manually advanced bar with a status field (loss, tokens/s ...).

    Use as ``with ProgressBar(total=n, desc="train") as bar: bar.update(1, status="loss 2.1")``.
    """

    def __init__(self, total: int | None, desc: str) -> None:
        self.total = total
        self.desc = desc
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> ProgressBar:
        if progress_enabled():
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=stderr_console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.desc, total=self.total, status="")
        return self

    def update(self, advance: int = 1, status: str | None = None) -> None:
        if self._progress is not None:
            kwargs = {"status": status} if status is not None else {}
            self._progress.update(self._task, advance=advance, **kwargs)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)  # type: ignore[arg-type]
