"""The worker process: runs the journey interpreter, customer preferences and the channel activities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.channels import Channel
from activities.ledger import DeliveryLedger
from activities.metrics import SendMetrics
from activities.send import NotificationActivities, SendPolicy
from workflows.journey import JourneyWorkflow
from workflows.preferences import CustomerPreferences
from workflows.preferences_client import PreferencesStore

WORKFLOWS: Sequence[type] = (JourneyWorkflow, CustomerPreferences)


@dataclass(frozen=True)
class WorkerLimits:
    """How much one worker replica takes on; scale out by adding replicas on the same task queue."""

    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    graceful_shutdown_seconds: float = 20.0


def build_worker(client: Client, task_queue: str, channels: Mapping[str, Channel],
                 *, max_concurrent_activities: int = 100, limits: WorkerLimits | None = None,
                 ledger: DeliveryLedger | None = None, metrics: SendMetrics | None = None,
                 policy: SendPolicy | None = None) -> Worker:
    """A worker for every Eventflow workflow and activity.

    Args:
        ledger: the delivery ledger and preference gate; by default the ``CustomerPreferences``
            workflows on this task queue.
        metrics: where send metrics go (a fresh registry when omitted).
        policy: default quiet hours and daily cap.
    """
    limits = limits or WorkerLimits(max_concurrent_activities=max_concurrent_activities)
    notifications = NotificationActivities(
        channels, ledger=ledger if ledger is not None else PreferencesStore(client, task_queue),
        metrics=metrics, policy=policy)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[notifications.send_notification],
        max_concurrent_activities=limits.max_concurrent_activities,
        max_concurrent_workflow_tasks=limits.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=limits.graceful_shutdown_seconds),
    )
