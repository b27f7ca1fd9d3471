"""Inputs and outputs of the send activity: one notification, addressed and templated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from events.model import Customer


@dataclass(frozen=True)
class SendNotificationInput:
    """One notification to deliver.

    Attributes:
        idempotency_key: stable across activity attempts and event redeliveries (workflow id + step id).
        channel: ``email``, ``sms`` or ``whatsapp``.
        customer: recipient; the channel picks the address it needs.
        template_id, locale: which template variant was chosen.
        subject_template, body_template: Jinja2 sources from the journey's snapshot.
        context: variables for rendering (customer, event, payload, journey).
        workflow_id, journey_id, step_id: where the send comes from, for logs and the ledger.
    """

    idempotency_key: str
    channel: str
    customer: Customer
    template_id: str
    locale: str
    body_template: str
    subject_template: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    workflow_id: str = ""
    journey_id: str = ""
    step_id: str = ""


@dataclass(frozen=True)
class SendResult:
    """What happened to a notification.

    Attributes:
        status: ``sent``, or ``duplicate`` when an earlier attempt had already delivered it.
        provider: the channel implementation that delivered it (``outbox``, ``sendgrid``, ``twilio``).
        provider_message_id: the provider's id for the message, when it gives one.
    """

    status: str
    provider: str
    provider_message_id: str | None = None
