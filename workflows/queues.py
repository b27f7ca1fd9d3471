"""Task queue names shared by the workflows that schedule sends and the workers that poll for them."""

from __future__ import annotations

from core.vocabulary import CHANNELS

__all__ = ["CHANNELS", "SEND_QUEUE_PER_CHANNEL_PATCH", "send_task_queue"]

#: Patch id of journeys that schedule each send on its channel's own task queue.
SEND_QUEUE_PER_CHANNEL_PATCH = "send-queue-per-channel"


def send_task_queue(task_queue: str, channel: str) -> str:
    """The task queue of ``channel``'s send activities, beside the journeys' ``task_queue``.

    One queue per channel lets Temporal enforce the provider's rate limit across every worker
    replica (``max_task_queue_activities_per_second`` is a per-queue limit held by the server).
    """
    return f"{task_queue}.send.{channel}"
