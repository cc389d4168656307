"""A tiny progress protocol so library code can report progress without importing rich.

The CLI installs a rich-backed reporter with :func:`set_reporter`; library code calls :func:`track` and
``task.advance(n)``. Without a reporter, progress is silent (tests, notebooks).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        return None


class _NullReporter:
    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield _NullTask()


_reporter: Reporter = _NullReporter()


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter or _NullReporter()


def track(description: str, total: int | None = None) -> contextlib.AbstractContextManager[Task]:
    """Context manager yielding a task with ``advance(n)``; shown as a progress bar under the CLI."""
    return _reporter.task(description, total)
