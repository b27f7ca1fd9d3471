"""Workflow-side sending: picks the template variant and runs the send activity for one step.

This is the seam between the interpreter (which decides *when* to send) and the channels (which
decide *how*): preference checks, quiet hours, caps and fallbacks belong here, not in the
interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notifications import SendNotificationInput, SendResult
    from activities.send import SEND_NOTIFICATION
    from events.model import CustomerEvent

SEND_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=20,
    non_retryable_error_types=["ChannelNotConfigured", "MissingAddress", "TemplateRenderError"],
)


@dataclass(frozen=True)
class SendRecord:
    """One send the journey made, as the status query reports it."""

    step_id: str
    channel: str
    template_id: str
    status: str


async def send_step(step: dict[str, Any], journey: dict[str, Any], event: CustomerEvent,
                    context: dict[str, Any]) -> SendRecord:
    """Runs one ``send`` step: variant by locale (falling back to the default), then the activity."""
    spec = step["send"]
    template = journey["templates"][spec["template"]]
    variants = template["variants"][spec["channel"]]
    locale = event.customer.locale if event.customer.locale in variants else template["default_locale"]
    variant = variants[locale]
    workflow_id = workflow.info().workflow_id
    result: SendResult = await workflow.execute_activity(
        SEND_NOTIFICATION,
        SendNotificationInput(
            idempotency_key=f"{workflow_id}/{step['id']}",
            channel=spec["channel"],
            customer=event.customer,
            template_id=template["id"],
            locale=locale,
            body_template=variant["body"],
            subject_template=variant.get("subject"),
            context=context,
            workflow_id=workflow_id,
            journey_id=journey["id"],
            step_id=step["id"],
        ),
        result_type=SendResult,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=SEND_RETRY_POLICY,
    )
    return SendRecord(step["id"], spec["channel"], template["id"], result.status)
