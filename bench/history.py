"""What a notification costs Temporal: workflows, history events and billable-style actions, read from histories.

After a phase, the workflows on its task queue are listed through visibility and a sample of their
histories is read. Actions are counted the way Temporal Cloud bills them: a workflow start, a
signal, an update, a timer, and every activity attempt (an ``ActivityTaskStarted`` counts its
``attempt``); history events are every event in the history.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

#: Event types that are one action each.
_ACTIONS = frozenset({
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_TIMER_STARTED,
})


@dataclass(frozen=True)
class HistoryCost:
    """Per notification: workflows, history events and actions (averaged over the sampled histories)."""

    workflows_per_notification: float
    history_events_per_notification: float
    actions_per_notification: float
    sampled_workflows: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def history_cost(client: Client, task_queue: str, notifications: int, *, sample: int = 40) -> HistoryCost:
    """The cost of ``notifications`` notifications whose workflows ran on ``task_queue``."""
    ids = [execution.id async for execution in client.list_workflows(f"TaskQueue = '{task_queue}'")]
    chosen = random.Random(0).sample(ids, min(sample, len(ids)))
    events = actions = 0
    for workflow_id in chosen:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            events += 1
            if event.event_type in _ACTIONS:
                actions += 1
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                actions += max(1, event.activity_task_started_event_attributes.attempt)
    per_workflow_events = events / len(chosen) if chosen else 0.0
    per_workflow_actions = actions / len(chosen) if chosen else 0.0
    workflows = len(ids) / notifications if notifications else 0.0
    return HistoryCost(round(workflows, 3), round(per_workflow_events * workflows, 2),
                       round(per_workflow_actions * workflows, 2), len(chosen))
