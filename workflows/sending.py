"""Workflow-side sending: picks the template variant and runs the send activity for one step.

This is the seam between the interpreter (which decides *when* to send) and the channels (which
decide *how*). Preferences, quiet hours and caps are decided inside the send activity against the
customer's ``CustomerPreferences`` workflow; this module sleeps when a send is deferred, turns
failures into records (a failed send never fails the journey) and falls back to another channel
when the step says so.

Step options (``step["send"]``): ``channel``, ``template``, optional ``fallback`` (a channel used
when the first is opted out or fails permanently), ``quiet_hours`` (``"HH:MM-HH:MM"``, or false
for transactional messages that ignore the worker default), ``daily_cap`` (int) and ``on_cap``
(``skip`` or ``defer``). A template variant may name an approved provider template with
``content_sid`` (Twilio Content API) or ``sendgrid_template_id``, plus ``content_variables``
(variable name to Jinja2 source).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.errors import PERMANENT_ERROR_TYPES
    from activities.notifications import SendNotificationInput, SendResult
    from activities.send import SEND_NOTIFICATION
    from events.model import CustomerEvent
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
_FALLBACK_ON = ("opted_out", "failed:")


@dataclass(frozen=True)
class SendRecord:
    """One send the journey made, as the status query reports it.

    Attributes:
        status: ``sent``, ``duplicate``, ``opted_out``, ``capped`` or ``failed:<ErrorType>``.
        provider, provider_message_id: who delivered it, when it was delivered.
        fallback_from: when the fallback channel was used, ``"<channel>:<status>"`` of the first try.
    """

    step_id: str
    channel: str
    template_id: str
    status: str
    provider: str = ""
    provider_message_id: str | None = None
    fallback_from: str | None = None


def pick_locale(wanted: str, available: Mapping[str, Any], default: str) -> str:
    """The variant for ``wanted`` (``de-DE``), else its language (``de``), else the template default."""
    if wanted in available:
        return wanted
    language = wanted.replace("_", "-").split("-", 1)[0]
    return language if language in available else default


async def send_step(step: dict[str, Any], journey: dict[str, Any], event: CustomerEvent,
                    context: dict[str, Any], *, retry_policy: RetryPolicy = SEND_RETRY_POLICY,
                    heartbeat_timeout: timedelta = SEND_HEARTBEAT_TIMEOUT,
                    stop_waiting: Callable[[], bool] | None = None) -> SendRecord:
    """Runs one ``send`` step: variant by locale (falling back to the default), then the activity.

    ``stop_waiting`` (the journey has exited) ends a quiet-hours deferral without sending.

    Never raises for a failed send: the outcome is in the returned record's ``status``.
    """
    spec = step["send"]
    first = await _send_on(spec["channel"], step, journey, event, context, retry_policy, heartbeat_timeout,
                           key_suffix="", stop_waiting=stop_waiting)
    fallback = spec.get("fallback")
    if fallback and fallback != spec["channel"] and first.status.startswith(_FALLBACK_ON):
        second = await _send_on(fallback, step, journey, event, context, retry_policy, heartbeat_timeout,
                                key_suffix=f"#{fallback}", stop_waiting=stop_waiting)
        return SendRecord(second.step_id, second.channel, second.template_id, second.status, second.provider,
                          second.provider_message_id, fallback_from=f"{first.channel}:{first.status}")
    return first


async def _send_on(channel: str, step: dict[str, Any], journey: dict[str, Any], event: CustomerEvent,
                   context: dict[str, Any], retry_policy: RetryPolicy, heartbeat_timeout: timedelta,
                   *, key_suffix: str, stop_waiting: Callable[[], bool] | None = None) -> SendRecord:
    spec = step["send"]
    template = journey["templates"][spec["template"]]
    variants = template["variants"].get(channel)
    if not variants:
        return SendRecord(step["id"], channel, template["id"], "failed:NoTemplateVariant")
    locale = pick_locale(event.customer.locale, variants, template["default_locale"])
    variant = variants.get(locale) or next(iter(variants.values()))
    workflow_id = workflow.info().workflow_id
    quiet_hours = spec.get("quiet_hours")
    notification = SendNotificationInput(
        idempotency_key=f"{workflow_id}/{step['id']}{key_suffix}",
        channel=channel,
        customer=event.customer,
        template_id=template["id"],
        locale=locale,
        body_template=variant.get("body", ""),
        subject_template=variant.get("subject"),
        context=context,
        workflow_id=workflow_id,
        journey_id=journey["id"],
        step_id=step["id"],
        provider_template_id=str(variant.get("content_sid") or variant.get("sendgrid_template_id") or ""),
        template_variable_templates={str(k): str(v) for k, v in (variant.get("content_variables") or {}).items()},
        quiet_hours="" if quiet_hours is False else (str(quiet_hours) if quiet_hours else None),
        daily_cap=int(spec["daily_cap"]) if spec.get("daily_cap") is not None else None,
        on_cap=str(spec.get("on_cap", "skip")),
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
            workflow.logger.warning("send failed step=%s channel=%s error_type=%s", step["id"], channel, error_type)
            return SendRecord(step["id"], channel, template["id"], f"failed:{error_type}")
        if result.status == "deferred" and result.not_before:
            wait = datetime.fromisoformat(result.not_before) - workflow.now()
            workflow.logger.info("send deferred step=%s channel=%s until=%s", step["id"], channel, result.not_before)
            if wait > timedelta(0):
                if stop_waiting is None:
                    await workflow.sleep(wait)
                else:
                    try:
                        await workflow.wait_condition(stop_waiting, timeout=wait)
                    except asyncio.TimeoutError:
                        pass
                    else:
                        return SendRecord(step["id"], channel, template["id"], "skipped:journey_exited")
            continue
        return SendRecord(step["id"], channel, template["id"], result.status, result.provider,
                          result.provider_message_id)


def _send_queue(channel: str) -> str | None:
    """The channel's own send queue (rate-limited across replicas by Temporal); journeys recorded
    before it existed keep sending on their own queue."""
    if workflow.patched(SEND_QUEUE_PER_CHANNEL_PATCH):
        return send_task_queue(workflow.info().task_queue, channel)
    return None


def _error_type(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    if isinstance(cause, TimeoutError):
        return "ActivityTimeout"
    return type(cause).__name__ if cause is not None else "ActivityError"
