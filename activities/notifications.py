"""Inputs and outputs of the send activity: one notification, addressed and templated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activities.outcomes import SendStatus
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
        html_template: the email variant's ``html`` part (Jinja2, autoescaped, CSS inlined at render
            time), sent with the body as ``multipart/alternative``; None for text only.
        context: variables for rendering (customer, event, payload, journey).
        workflow_id, journey_id, step_id: where the send comes from, for logs and the ledger.
        provider_template_id: an approved provider template (Twilio ``content_sid``, SendGrid ``d-...``).
        template_variable_templates: Jinja2 sources of that template's variables, by variable name.
        quiet_hours: ``"HH:MM-HH:MM"`` overriding the worker default, ``""`` for none, None for the default.
        daily_cap: per-channel daily cap overriding the worker default (0: no cap), None for the default.
        on_cap: ``skip`` or ``defer`` when the cap is reached.
        caps: rolling caps (`activities.caps.CapSet` text) overriding the worker's per (scope,
            window), None for the worker's alone.
        priority: the send's `activities.caps.Priority` (``transactional`` passes every cap); ``""`` is normal.
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
    provider_template_id: str = ""
    template_variable_templates: dict[str, str] = field(default_factory=dict)
    quiet_hours: str | None = None
    daily_cap: int | None = None
    on_cap: str = "skip"
    caps: str | None = None
    priority: str = ""
    #: The channel's template variants by locale, and the template's default locale, so the
    #: activity can pick by the locale in the customer's profile at send time (activities/contact.py).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_locale: str = ""
    html_template: str | None = None
    #: The step's subscription topic (journeys/topics.yaml); ``""``: none (the channel-wide opt-out alone).
    topic: str = ""


@dataclass(frozen=True)
class SendResult:
    """What happened to a notification.

    Attributes:
        status: ``sent``; ``duplicate`` when an earlier attempt had already delivered it; ``opted_out``;
            ``capped`` (skipped by the frequency cap); ``deferred`` (quiet hours or cap: try again at
            ``not_before``); ``uncertain`` (an interrupted attempt may have delivered it and the
            channel's policy is not to risk a second copy).
        provider: the channel implementation that delivered it (``outbox``, ``sendgrid``, ``twilio``).
        provider_message_id: the provider's id for the message, when it gives one.
        not_before: for ``deferred``, the ISO 8601 UTC instant to try again.
        error_type: for ``skipped``, why (`activities.topics.SkipReason`); the journey records
            ``skipped:<reason>``.
    """

    status: SendStatus
    provider: str
    provider_message_id: str | None = None
    not_before: str | None = None
    error_type: str = ""
