"""The generic journey interpreter: one workflow type runs every journey definition.

The definition snapshot arrives in the workflow input, so an instance runs the version it was
started with no matter how the files change later.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.sending import SendRecord, send_step

with workflow.unsafe.imports_passed_through():
    from events.model import CustomerEvent
    from journeys.durations import parse_duration

JOURNEY_WORKFLOW = "Journey"
EVENT_SIGNAL = "event"
STATUS_QUERY = "status"

@dataclass(frozen=True)
class JourneyInput:
    """Start input: the definition snapshot and the triggering event."""

    journey: dict[str, Any]
    event: CustomerEvent


@dataclass
class JourneyStatus:
    """Answer of the ``status`` query."""

    journey_id: str
    journey_version: int
    current_step: str | None
    finished: bool
    exit_reason: str | None
    sends: list[SendRecord] = field(default_factory=list)


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    """Walks a definition's steps for one customer."""

    def __init__(self) -> None:
        self._journey: dict[str, Any] = {}
        self._current_step: str | None = None
        self._exit_reason: str | None = None
        self._finished = False
        self._seen_event_ids: set[str] = set()
        self._sends: list[SendRecord] = []

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: CustomerEvent) -> None:
        """Receives events the journey listens to; redelivered events (same event_id) are ignored."""
        if event.event_id in self._seen_event_ids:
            return
        self._seen_event_ids.add(event.event_id)
        exits = {e["event_type"] for e in self._journey.get("exit_events", ())}
        if event.event_type in exits and self._exit_reason is None:
            self._exit_reason = f"exit event {event.event_type}"

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> JourneyStatus:
        return JourneyStatus(
            journey_id=self._journey.get("id", ""),
            journey_version=int(self._journey.get("version", 0)),
            current_step=self._current_step,
            finished=self._finished,
            exit_reason=self._exit_reason,
            sends=list(self._sends),
        )

    @workflow.run
    async def run(self, start: JourneyInput) -> JourneyStatus:
        self._journey = start.journey
        self._seen_event_ids.add(start.event.event_id)
        context = {**start.event.as_context(), "journey": {"id": start.journey["id"], "version": start.journey["version"]}}
        for step in start.journey["steps"]:
            if self._exit_reason is not None:
                break
            self._current_step = step["id"]
            if "send" in step:
                await self._send(step, start.event, context)
            elif "delay" in step:
                await self._delay(step["delay"])
            else:
                raise ApplicationError(f"unsupported step {step['id']}", type="UnsupportedStep", non_retryable=True)
        self._finished = True
        self._current_step = None
        return self.status()

    async def _delay(self, spec: dict[str, Any]) -> None:
        try:
            await workflow.wait_condition(lambda: self._exit_reason is not None,
                                          timeout=parse_duration(spec["duration"]))
        except asyncio.TimeoutError:
            pass

    async def _send(self, step: dict[str, Any], event: CustomerEvent, context: dict[str, Any]) -> None:
        self._sends.append(await send_step(step, self._journey, event, context))
