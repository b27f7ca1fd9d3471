"""The worker process: runs the journey interpreter and the channel activities on one task queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.channels import Channel
from activities.send import NotificationActivities
from workflows.journey import JourneyWorkflow

WORKFLOWS: Sequence[type] = (JourneyWorkflow,)


def build_worker(client: Client, task_queue: str, channels: Mapping[str, Channel],
                 *, max_concurrent_activities: int = 100) -> Worker:
    """A worker for every Eventflow workflow and activity."""
    notifications = NotificationActivities(channels)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[notifications.send_notification],
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=20),
    )

