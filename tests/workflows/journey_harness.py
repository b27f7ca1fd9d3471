"""Shared pieces for interpreter tests: journeys from YAML text, a capturing send activity, a runner."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import SendStatus
from activities.rendering import render
from activities.send import SEND_NOTIFICATION
from activities.webhook import WEBHOOK_CALL, WebhookCallInput, WebhookCallResult
from events.model import Customer, CustomerEvent
from journeys.loader import validate_folder
from workflows.journey import BORN_WITH, EVENT_SIGNAL, JOURNEY_WORKFLOW, JourneyInput, JourneyStatus, JourneyWorkflow
from workflows.worker import JourneyWorkers, with_send_queues

DEFAULT_TEMPLATES = {
    "note": {"id": "note", "default_locale": "en", "channels": {
        "email": {"en": {"subject": "Note {{ journey.id }}", "body": "Hi {{ customer.first_name }}"},
                  "de": {"subject": "Notiz {{ journey.id }}", "body": "Hallo {{ customer.first_name }}"}},
        "sms": {"en": {"body": "SMS for {{ customer.id }}"}},
        # With a template, as the validator asks of a WhatsApp send without a fallback (journeys/_whatsapp_checks.py).
        "whatsapp": {"en": {"body": "WA for {{ customer.id }}", "content_sid": "HXnote"}}}},
    "digest": {"id": "digest", "default_locale": "en", "channels": {
        "email": {"en": {"subject": "{{ digest.count }} updates",
                         "body": "{% for e in digest.events %}{{ e.payload.order_id }};{% endfor %}"}}}},
}


@dataclass
class Sent:
    """One captured send."""

    step_id: str
    channel: str
    template_id: str
    locale: str
    subject: str | None
    body: str
    at: datetime
    workflow_id: str


@dataclass
class Capture:
    """A ``send_notification`` activity that records instead of delivering."""

    sent: list[Sent] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    #: (customer id, channel) pairs whose address the ledger would find suppressed: answered
    #: ``suppressed``, nothing sent.
    suppressed: set[tuple[str, str]] = field(default_factory=set)

    @activity.defn(name=SEND_NOTIFICATION)
    async def send_notification(self, notification: SendNotificationInput) -> SendResult:
        if (notification.customer.id, notification.channel) in self.suppressed:
            return SendResult(status=SendStatus.SUPPRESSED, provider="capture")
        self.sent.append(Sent(
            step_id=notification.step_id, channel=notification.channel, template_id=notification.template_id,
            locale=notification.locale,
            subject=render(notification.template_id, notification.subject_template, notification.context)
            if notification.subject_template else None,
            body=render(notification.template_id, notification.body_template, notification.context),
            at=activity.info().current_attempt_scheduled_time, workflow_id=notification.workflow_id))
        return SendResult(status=SendStatus.SENT, provider="capture")

    @activity.defn(name=WEBHOOK_CALL)
    async def call_webhook(self, call: WebhookCallInput) -> WebhookCallResult:
        """Answers every webhook call with a fixed CRM record (the real call is tests/workflows/test_webhook.py)."""
        self.webhooks.append(call.step_id)
        return WebhookCallResult(status_code=200, data={"tier": "gold"})

    def steps(self, workflow_id: str | None = None) -> list[str]:
        return [s.step_id for s in self.sent if workflow_id is None or s.workflow_id == workflow_id]


def compile_journey(tmp: Path, definition: str, templates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes a definition (YAML text) and templates into ``tmp`` and returns its validated snapshot."""
    (tmp / "definitions").mkdir(parents=True, exist_ok=True)
    (tmp / "templates").mkdir(parents=True, exist_ok=True)
    for template_id, body in (templates or DEFAULT_TEMPLATES).items():
        (tmp / "templates" / f"{template_id}.yaml").write_text(yaml.safe_dump(dict(body)))
    (tmp / "definitions" / "journey.yaml").write_text(definition)
    report = validate_folder(tmp)
    assert not report.problems, [str(p) for p in report.problems]
    (snapshot,) = [d.snapshot() for d in report.definitions]
    return snapshot


def event(event_type: str, payload: dict[str, Any], *, customer_id: str | None = None, locale: str = "en",
          timezone: str = "UTC", occurred_at: str = "2026-01-15T10:30:00+00:00") -> CustomerEvent:
    return CustomerEvent(
        event_id=str(uuid.uuid4()), event_type=event_type, occurred_at=occurred_at,
        customer=Customer(id=customer_id or f"cust-{uuid.uuid4().hex[:8]}", email="kim@example.com",
                          phone="+15555550123", timezone=timezone, locale=locale, first_name="Kim"),
        payload=payload)


def purchase(customer_id: str | None = None, order_id: str = "ord-1", amount: str = "49.90",
             cart_id: str | None = "cart-1", **kwargs: Any) -> CustomerEvent:
    return event("PurchaseCompleted", {"order_id": order_id, "cart_id": cart_id, "items": [],
                                       "total": {"amount": amount, "currency": "EUR"}},
                 customer_id=customer_id, **kwargs)


def worker(client: Client, task_queue: str, capture: Capture) -> JourneyWorkers:
    return with_send_queues(client, task_queue, Worker(client, task_queue=task_queue, workflows=[JourneyWorkflow],
                                                       activities=[capture.send_notification,
                                                                   capture.call_webhook]),
                            [capture.send_notification])


async def start(client: Client, task_queue: str, snapshot: dict[str, Any], trigger: CustomerEvent, *,
                continue_as_new_after: int = 500, workflow_id: str | None = None,
                with_event: CustomerEvent | None = None, born: bool = True) -> WorkflowHandle[Any, Any]:
    """Starts a journey instance; ``with_event`` is delivered with the start (signal-with-start), in its first task.

    ``born``: as the consumer starts it (born with every patch, `workflows.born`); False starts it as
    a release before that field did, asking each patch.
    """
    return await client.start_workflow(
        JOURNEY_WORKFLOW, JourneyInput(journey=snapshot, event=trigger, continue_as_new_after=continue_as_new_after,
                                       born_with=BORN_WITH if born else ()),
        id=workflow_id or f"test-journey-{uuid.uuid4().hex[:10]}", task_queue=task_queue,
        result_type=JourneyStatus, start_signal=None if with_event is None else EVENT_SIGNAL,
        start_signal_args=[] if with_event is None else [with_event])


async def result(handle: WorkflowHandle[Any, Any]) -> JourneyStatus:
    status: JourneyStatus = await handle.result()
    return status


def offsets(capture: Capture, origin: datetime) -> list[tuple[str, timedelta]]:
    return [(s.step_id, s.at - origin) for s in capture.sent]
