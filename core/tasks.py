"""Background tasks with an owner: a failure is reported when it happens, and every task is awaited at the end.

A task nobody awaits loses its failure (asyncio logs "Task exception was never retrieved" at garbage
collection, if ever) and may outlive the loop. `supervised` starts a long-running loop whose failure
is logged at once and handed to an optional callback (a process ends itself, readiness turns);
`stop_all` waits a bounded time for loops asked to stop, cancels the late ones and awaits every one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


def supervised(coroutine: Coroutine[Any, Any, T], *, name: str,
               on_failure: Callable[[BaseException], object] | None = None) -> asyncio.Task[T]:
    """Starts ``coroutine`` as a task whose failure is logged (``background_task_failed``) when it happens.

    Args:
        coroutine: a loop that is meant to run until it is asked to stop.
        name: the task's name, in logs.
        on_failure: called with the error, after it is logged (not for a cancellation).
    """
    task = asyncio.get_running_loop().create_task(coroutine, name=name)

    def finished(done: asyncio.Task[T]) -> None:
        error = report_failure(done)
        if error is not None and on_failure is not None:
            on_failure(error)

    task.add_done_callback(finished)
    return task


def report_failure(task: asyncio.Task[Any]) -> BaseException | None:
    """Reads a finished task's outcome; logs and returns its error (None when it ended well or was cancelled)."""
    if task.cancelled():
        return None
    error = task.exception()
    if error is not None:
        log.error("background_task_failed", task=task.get_name(), error_type=type(error).__name__,
                  error=repr(error)[:300])
    return error


async def stop_all(tasks: Iterable[asyncio.Task[Any]], wait_seconds: float) -> list[BaseException]:
    """Waits up to ``wait_seconds`` for ``tasks`` (already asked to stop), cancels the late ones and awaits all.

    Returns the errors the tasks ended with (cancellations excluded), in the given order; each was
    read, so none is reported again as never retrieved.
    """
    owned = list(tasks)
    if not owned:
        return []
    _, late = await asyncio.wait(owned, timeout=wait_seconds)
    for task in late:
        log.warning("background_task_cancelled", task=task.get_name())
        task.cancel()
    outcomes = await asyncio.gather(*owned, return_exceptions=True)
    return [outcome for outcome in outcomes
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError)]
