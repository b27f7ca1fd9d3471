"""Task-queue backlog gauges: what waits on Temporal for the workers, from ``DescribeTaskQueue``.

The worker asks the server every `BACKLOG_INTERVAL_SECONDS` for the approximate backlog (count
and age of the oldest task) of its queues and serves it as ``eventflow_task_queue_backlog`` and
``eventflow_task_queue_backlog_age_seconds``, so the dashboard and the backlog-age alert see the
queue the workers drain. Every replica reports the same server-side number: read it with ``max``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog
from prometheus_client import CollectorRegistry, Gauge
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

log = structlog.get_logger(__name__)

#: Seconds between two reads of the backlog (the server caches its statistics for a few seconds).
BACKLOG_INTERVAL_SECONDS = 15.0


class QueueKind(StrEnum):
    """Which tasks of a queue: workflow tasks or activity tasks."""

    WORKFLOW = "workflow"
    ACTIVITY = "activity"


_TYPES = {QueueKind.WORKFLOW: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
          QueueKind.ACTIVITY: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}


@dataclass(frozen=True)
class WatchedQueue:
    """One task queue and the kind of tasks on it to report."""

    task_queue: str
    kind: QueueKind


@dataclass(frozen=True)
class QueueBacklog:
    """The approximate backlog of one watched queue."""

    queue: WatchedQueue
    count: int
    age_seconds: float


class BacklogMetrics:
    """The two backlog gauges, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.backlog = Gauge("eventflow_task_queue_backlog",
                             "Tasks waiting on a Temporal task queue for a worker (approximate).",
                             ["task_queue", "task_type"], registry=registry)
        self.age_seconds = Gauge("eventflow_task_queue_backlog_age_seconds",
                                 "Age of the oldest task waiting on a Temporal task queue (approximate).",
                                 ["task_queue", "task_type"], registry=registry)


class BacklogMonitor:
    """Reads the backlog of the worker's queues into `BacklogMetrics`."""

    def __init__(self, client: Client, namespace: str, queues: Sequence[WatchedQueue], metrics: BacklogMetrics,
                 *, interval_seconds: float = BACKLOG_INTERVAL_SECONDS) -> None:
        self._client = client
        self._namespace = namespace
        self._queues = tuple(queues)
        self._metrics = metrics
        self._interval_seconds = interval_seconds

    async def refresh(self) -> list[QueueBacklog]:
        """Reads every queue once and sets the gauges; a queue whose read fails keeps its last value."""
        results = await asyncio.gather(*(self._describe(queue) for queue in self._queues), return_exceptions=True)
        backlogs: list[QueueBacklog] = []
        for queue, result in zip(self._queues, results, strict=True):
            match result:
                case QueueBacklog():
                    self._metrics.backlog.labels(queue.task_queue, queue.kind).set(result.count)
                    self._metrics.age_seconds.labels(queue.task_queue, queue.kind).set(result.age_seconds)
                    backlogs.append(result)
                case RPCError() as exc:
                    log.warning("task_queue_backlog_unavailable", task_queue=queue.task_queue, task_type=queue.kind,
                                status=exc.status.name, reason=exc.message)
                case Exception() as exc:  # the server unreachable: the gauges keep their last value
                    log.warning("task_queue_backlog_unavailable", task_queue=queue.task_queue, task_type=queue.kind,
                                error_type=type(exc).__name__, reason=str(exc)[:200])
                case BaseException() as exc:  # cancellation
                    raise exc
        return backlogs

    async def run(self, stop: asyncio.Event) -> None:
        """Refreshes until ``stop`` is set."""
        while not stop.is_set():
            await self.refresh()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval_seconds)
            except TimeoutError:
                pass

    async def _describe(self, queue: WatchedQueue) -> QueueBacklog:
        response = await self._client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=self._namespace, task_queue=TaskQueue(name=queue.task_queue),
            task_queue_type=_TYPES[queue.kind], report_stats=True))
        stats = response.stats
        return QueueBacklog(queue, int(stats.approximate_backlog_count),
                            stats.approximate_backlog_age.ToTimedelta().total_seconds())


def worker_queues(task_queue: str, send_queues: Sequence[str]) -> list[WatchedQueue]:
    """The journey queue's workflow and activity tasks and every send queue's activity tasks."""
    return [WatchedQueue(task_queue, QueueKind.WORKFLOW), WatchedQueue(task_queue, QueueKind.ACTIVITY),
            *(WatchedQueue(queue, QueueKind.ACTIVITY) for queue in send_queues)]
