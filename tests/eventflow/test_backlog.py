"""The backlog gauges follow the real server: they rise while no worker polls and fall when one starts."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from eventflow.backlog import BacklogMetrics, BacklogMonitor, QueueKind, WatchedQueue, worker_queues
from tests.harness import eventually


@workflow.defn(name="BacklogProbe")
class BacklogProbe:
    @workflow.run
    async def run(self) -> str:
        return "done"


def _gauge(registry: CollectorRegistry, name: str, queue: str) -> float:
    return registry.get_sample_value(name, {"task_queue": queue, "task_type": "workflow"}) or 0.0


async def _start(client: Client, queue: str, ids: range) -> None:
    await asyncio.gather(*(client.start_workflow(BacklogProbe.run, id=f"{queue}-{i}", task_queue=queue) for i in ids))


async def test_backlog_rises_while_workers_are_stopped_and_falls_when_they_start(
        temporal_client: Client, unique: str) -> None:
    queue = f"test-backlog-{unique}"
    registry = CollectorRegistry()
    monitor = BacklogMonitor(temporal_client, "default", [WatchedQueue(queue, QueueKind.WORKFLOW)],
                             BacklogMetrics(registry), interval_seconds=0.2)

    async def backlog() -> float:
        await monitor.refresh()
        return _gauge(registry, "eventflow_task_queue_backlog", queue)

    await _start(temporal_client, queue, range(3))
    await eventually(lambda: _at_least(backlog(), 3), message="a backlog of 3 with no worker")
    await _start(temporal_client, queue, range(3, 8))
    await eventually(lambda: _at_least(backlog(), 8), message="the backlog to rise to 8")
    assert _gauge(registry, "eventflow_task_queue_backlog_age_seconds", queue) > 0

    stop = asyncio.Event()
    running = asyncio.create_task(monitor.run(stop))
    # Unsandboxed: the sandbox would re-import this test module and everything it imports.
    async with Worker(temporal_client, task_queue=queue, workflows=[BacklogProbe],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        for i in range(8):
            assert await temporal_client.get_workflow_handle(f"{queue}-{i}").result() == "done"
        await eventually(lambda: _gauge(registry, "eventflow_task_queue_backlog", queue) == 0,
                         message="the backlog to fall to 0 once a worker runs")
    stop.set()
    await running


async def _at_least(value: object, minimum: float) -> bool:
    assert asyncio.iscoroutine(value)
    return float(await value) >= minimum


def test_the_worker_watches_its_journey_queue_and_every_send_queue() -> None:
    queues = worker_queues("q", ["q.send.email", "q.send.sms"])
    assert queues == [WatchedQueue("q", QueueKind.WORKFLOW), WatchedQueue("q", QueueKind.ACTIVITY),
                      WatchedQueue("q.send.email", QueueKind.ACTIVITY), WatchedQueue("q.send.sms", QueueKind.ACTIVITY)]
