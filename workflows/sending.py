"""Workflow-side sending: picks the template variant and runs the send activity for one step.

This is the seam between the interpreter (which decides *when* to send) and the channels (which
decide *how*). Preferences, quiet hours and caps are decided inside the send activity against the
customer's ``CustomerPreferences`` workflow; this module sleeps when a send is deferred, turns
failures into records (a failed send never fails the journey) and falls back to another channel
when the step says so.

Step options are `journeys.steps.SendOptions`: ``channel``, ``template``, optional ``fallback`` (a
channel used when the first is opted out or fails permanently), ``quiet_hours`` (the step's own
window, `QuietHours("")` for transactional messages that ignore the worker default, None for the
default), ``daily_cap`` and ``on_cap``. A template variant may name an approved provider template
with ``content_sid`` (Twilio Content API) or ``sendgrid_template_id``, plus ``content_variables``
(variable name to Jinja2 source). An email variant's ``html`` part goes with the body as its HTML
alternative (behind `SEND_HTML_PART_PATCH`). ``priority`` and ``caps``: rolling caps (activities/caps.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from workflows import born

with workflow.unsafe.imports_passed_through():
    from activities.contact import pick_locale
    from activities.errors import PERMANENT_ERROR_TYPES
    from activities.notifications import SendNotificationInput, SendResult
    from activities.outcomes import SendStatus, split_legacy_status
    from activities.send import SEND_NOTIFICATION
    from events.model import CustomerEvent
    from journeys.model import JourneySnapshot
    from journeys.steps import SendOptions
    from workflows.queues import SEND_QUEUE_PER_CHANNEL_PATCH, send_task_queue

SEND_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=20,
    non_retryable_error_types=list(PERMANENT_ERROR_TYPES),
)
SEND_START_TO_CLOSE = timedelta(seconds=60)
#: A worker that dies mid-send is noticed after this long, and another worker retries.
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
#: Outcomes after which a step's ``fallback`` channel is tried.
_FALLBACK_ON = frozenset({SendStatus.OPTED_OUT, SendStatus.FAILED})
#: ``no_contact`` (which replaced the ``failed:MissingAddress`` of sends without an address) falls back too.
NO_CONTACT_FALLBACK_PATCH = "no-contact-falls-back"
#: A ``suppressed`` address (hard bounce, spam report, STOP) falls back too, as an opt-out does.
SUPPRESSED_FALLBACK_PATCH = "suppressed-falls-back"
#: An email variant's ``html`` part travels to the send activity (before, only subject and body did).
SEND_HTML_PART_PATCH = "send-html-part"


@dataclass(frozen=True)
class Fallback:
    """Why a send went out on the step's fallback channel: the channel tried first, and what became of it.

    Attributes:
        channel: the step's own channel.
        outcome: the first try's `SendRecord.outcome` (``failed:InvalidAddress``, ``opted_out``) or the
            delivery failure reported for it later (``bounced``).
    """

    channel: str
    outcome: str

    def __str__(self) -> str:
        """The form `SendRecord.fallback_from` carries: ``<channel>:<outcome>``."""
        return f"{self.channel}:{self.outcome}"

    @classmethod
    def parse(cls, text: str) -> Fallback:
        """Reads ``<channel>:<outcome>``; channel names hold no colon, outcomes may (``failed:<ErrorType>``)."""
        channel, _, outcome = text.partition(":")
        return cls(channel, outcome)


@dataclass(frozen=True)
class SendRecord:
    """One send the journey made, as the status query reports it.

    Attributes:
        status: what became of it (a `SendStatus`). Typed ``str | SendStatus``, ``str`` first, only
            so that records carried by older histories, where a failure read ``"failed:<ErrorType>"``,
            reach ``__post_init__`` whole (the converter tries the union in order, and `SendStatus`
            alone would drop the error type): construction always leaves a `SendStatus` here, with
            the type moved to ``error_type``.
        error_type: for ``failed``, the error type (``InvalidAddress``); for ``skipped``, why.
        provider, provider_message_id: who delivered it, when it was delivered.
        fallback_from: when the fallback channel was used, the first try as ``"<channel>:<outcome>"``:
            a `Fallback` in the form histories have always carried (read it typed as `fallback`).
    """

    step_id: str
    channel: str
    template_id: str
    status: str | SendStatus
    provider: str = ""
    provider_message_id: str | None = None
    fallback_from: str | None = None
    error_type: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.status, SendStatus):
            head, tail = split_legacy_status(str(self.status))
            object.__setattr__(self, "status", SendStatus(head))
            if tail and not self.error_type:
                object.__setattr__(self, "error_type", tail)

    @property
    def outcome(self) -> str:
        """Status and error type in one word for people: ``sent``, ``failed:InvalidAddress``."""
        return f"{self.status}:{self.error_type}" if self.error_type else str(self.status)

    @property
    def fallback(self) -> Fallback | None:
        """``fallback_from`` typed: the first try this send stood in for, None for a first try."""
        return None if self.fallback_from is None else Fallback.parse(self.fallback_from)

    def falling_back_from(self, first: Fallback) -> SendRecord:
        """This record as the fallback send for ``first``."""
        return replace(self, fallback_from=str(first))


async def send_step(step_id: str, options: SendOptions, journey: JourneySnapshot, event: CustomerEvent,
                    context: dict[str, Any], *, retry_policy: RetryPolicy = SEND_RETRY_POLICY,
                    heartbeat_timeout: timedelta = SEND_HEARTBEAT_TIMEOUT,
                    stop_waiting: Callable[[], bool] | None = None) -> SendRecord:
    """Runs one send (a ``send`` step, or a ``digest``'s): variant by locale, then the activity.

    ``stop_waiting`` (the journey has exited) ends a quiet-hours deferral without sending.

    Never raises for a failed send: the outcome is in the returned record's ``status``.
    """
    first = await _send_on(options.channel, step_id, options, journey, event, context, retry_policy,
                           heartbeat_timeout, key_suffix="", stop_waiting=stop_waiting)
    fallback = options.fallback
    if fallback and fallback != options.channel and (
            first.status in _FALLBACK_ON
            or first.status is SendStatus.NO_CONTACT and born.has(NO_CONTACT_FALLBACK_PATCH)
            or first.status is SendStatus.SUPPRESSED and born.has(SUPPRESSED_FALLBACK_PATCH)):
        second = await _send_on(fallback, step_id, options, journey, event, context, retry_policy, heartbeat_timeout,
                                key_suffix=f"#{fallback}", stop_waiting=stop_waiting)
        return second.falling_back_from(Fallback(first.channel, first.outcome))
    return first


async def send_fallback(step_id: str, options: SendOptions, journey: JourneySnapshot, event: CustomerEvent,
                        context: dict[str, Any], *, stop_waiting: Callable[[], bool] | None = None) -> SendRecord:
    """Sends the step's ``fallback`` channel after a late failure report (the same key as an immediate fallback)."""
    assert options.fallback is not None
    return await _send_on(options.fallback, step_id, options, journey, event, context, SEND_RETRY_POLICY,
                          SEND_HEARTBEAT_TIMEOUT, key_suffix=f"#{options.fallback}", stop_waiting=stop_waiting)


async def _send_on(channel: str, step_id: str, options: SendOptions, journey: JourneySnapshot, event: CustomerEvent,
                   context: dict[str, Any], retry_policy: RetryPolicy, heartbeat_timeout: timedelta,
                   *, key_suffix: str, stop_waiting: Callable[[], bool] | None = None) -> SendRecord:
    template = journey.templates[options.template]
    variants: Mapping[str, Any] = template.variants.get(channel) or {}
    if not variants:
        return SendRecord(step_id, channel, template.id, SendStatus.FAILED, error_type="NoTemplateVariant")
    locale = pick_locale(event.customer.locale, variants, template.default_locale)
    variant = variants.get(locale) or next(iter(variants.values()))
    workflow_id = workflow.info().workflow_id
    notification = SendNotificationInput(
        idempotency_key=f"{workflow_id}/{step_id}{key_suffix}",
        channel=channel,
        customer=event.customer,
        template_id=template.id,
        locale=locale,
        body_template=variant.get("body", ""),
        subject_template=variant.get("subject"),
        context=context,
        workflow_id=workflow_id,
        journey_id=journey.id,
        step_id=step_id,
        provider_template_id=str(variant.get("content_sid") or variant.get("sendgrid_template_id") or ""),
        template_variable_templates={str(k): str(v) for k, v in (variant.get("content_variables") or {}).items()},
        quiet_hours=None if options.quiet_hours is None else options.quiet_hours.window,
        daily_cap=options.daily_cap,
        on_cap=options.on_cap.value,
        caps=options.caps,
        priority=options.priority.value if options.priority is not None else "",
        # The activity picks again by the locale in the customer's profile at send time.
        variants={str(name): dict(v) for name, v in variants.items()},
        default_locale=template.default_locale,
        html_template=_html_part(variant),
        topic=options.topic or "",
    )
    while True:
        try:
            result: SendResult = await workflow.execute_activity(
                SEND_NOTIFICATION,
                notification,
                task_queue=_send_queue(channel),
                result_type=SendResult,
                start_to_close_timeout=SEND_START_TO_CLOSE,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=retry_policy,
            )
        except ActivityError as err:
            error_type = _error_type(err)
            workflow.logger.warning("send failed step=%s channel=%s error_type=%s", step_id, channel, error_type)
            return SendRecord(step_id, channel, template.id, SendStatus.FAILED, error_type=error_type)
        status, detail = split_legacy_status(str(result.status))
        if status == SendStatus.DEFERRED and result.not_before:
            wait = datetime.fromisoformat(result.not_before) - workflow.now()
            workflow.logger.info("send deferred step=%s channel=%s until=%s", step_id, channel, result.not_before)
            if wait > timedelta(0):
                if stop_waiting is None:
                    await workflow.sleep(wait)
                else:
                    try:
                        await workflow.wait_condition(stop_waiting, timeout=wait)
                    except builtins.TimeoutError:
                        pass
                    else:
                        return SendRecord(step_id, channel, template.id, SendStatus.SKIPPED,
                                          error_type="journey_exited")
            continue
        return SendRecord(step_id, channel, template.id, SendStatus(status), result.provider,
                          result.provider_message_id, error_type=str(getattr(result, "error_type", "") or detail))


def _html_part(variant: Mapping[str, Any]) -> str | None:
    """The variant's ``html`` source; asked of the patch only when there is one, so sends without
    an HTML part record no marker."""
    html = variant.get("html")
    if isinstance(html, str) and html and born.has(SEND_HTML_PART_PATCH):
        return html
    return None


def _send_queue(channel: str) -> str | None:
    """The channel's own send queue (rate-limited across replicas by Temporal); journeys recorded
    before it existed keep sending on their own queue."""
    if born.has(SEND_QUEUE_PER_CHANNEL_PATCH):
        return send_task_queue(workflow.info().task_queue, channel)
    return None


def _error_type(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    if isinstance(cause, TimeoutError):
        return "ActivityTimeout"
    return type(cause).__name__ if cause is not None else "ActivityError"
