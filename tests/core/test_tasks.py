"""Background tasks with an owner: failures reported when they happen, every task awaited at the end."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from core.tasks import stop_all, supervised
from tests.unretrieved import Unretrieved, unretrieved

__all__ = ["unretrieved"]


async def test_a_failing_loop_is_reported_when_it_fails_and_its_owner_is_told(unretrieved: Unretrieved) -> None:
    told: list[BaseException] = []

    async def broken() -> None:
        raise RuntimeError("lost the server")

    with capture_logs() as logs:
        task = supervised(broken(), name="broken-loop", on_failure=told.append)
        await asyncio.wait([task])
        await asyncio.sleep(0)  # the done callback runs on the next turn
    assert [(entry["event"], entry["task"]) for entry in logs] == [("background_task_failed", "broken-loop")]
    assert [str(error) for error in told] == ["lost the server"]
    del task
    assert unretrieved.messages() == []


async def test_stop_all_cancels_late_loops_and_reads_every_outcome(unretrieved: Unretrieved) -> None:
    stop = asyncio.Event()

    async def obedient() -> None:
        await stop.wait()

    async def deaf() -> None:
        await asyncio.Event().wait()

    async def failing() -> None:
        await stop.wait()
        raise ValueError("failed while stopping")

    tasks = [supervised(obedient(), name="obedient"), supervised(deaf(), name="deaf"),
             supervised(failing(), name="failing")]
    stop.set()
    with capture_logs() as logs:
        errors = await stop_all(tasks, wait_seconds=0.2)
    assert [str(error) for error in errors] == ["failed while stopping"]
    assert all(task.done() for task in tasks) and tasks[1].cancelled()
    assert ("background_task_cancelled", "deaf") in [(entry["event"], entry.get("task")) for entry in logs]
    del tasks
    assert unretrieved.messages() == []
