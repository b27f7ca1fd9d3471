"""Workflow-side webhook calls: schedules the webhook activity for one step and keeps its answer.

The response's JSON goes into the journey's context under ``webhooks.<save_as>``, where later
templates and conditions read it; a failure never fails the journey: it becomes a
`WebhookRecord` on the instance (its status query lists them), and the step's ``on_failure``
decides whether the journey goes on or exits. The activity runs on the journey's own task queue
(served by every journey worker), so no new queue or worker deployment is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.webhook import WEBHOOK_CALL, WebhookCallInput, WebhookCallResult, WebhookErrorType
    from journeys.durations import parse_duration
    from journeys.model import JourneySnapshot
    from journeys.steps import WebhookRetry, WebhookStep

#: Patch id of journeys whose interpreter runs ``webhook`` steps.
WEBHOOK_STEP_PATCH = "webhook-step"
#: Where saved responses live in the journey's context.
WEBHOOKS_CONTEXT_KEY = "webhooks"
#: Slack between the step's HTTP timeout and the activity's, so the call's own timeout fires first.
_ACTIVITY_MARGIN = timedelta(seconds=10)


class WebhookStatus(StrEnum):
    """What became of a webhook call; histories recorded before this type carry the same words."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class WebhookRecord:
    """One webhook call the journey made: ``ok`` with the HTTP status, or ``failed`` with the error type."""

    step_id: str
    status: WebhookStatus
    status_code: int = 0
    error_type: str = ""

    @property
    def outcome(self) -> str:
        return f"{self.status}:{self.error_type}" if self.error_type else f"{self.status}:{self.status_code}"


def retry_policy(retry: WebhookRetry | None) -> RetryPolicy:
    """The step's retry policy; other 4xx, refused hosts and bad responses are never retried."""
    options = retry or WebhookRetry()
    return RetryPolicy(initial_interval=parse_duration(options.initial_interval), backoff_coefficient=2.0,
                       maximum_interval=parse_duration(options.max_interval), maximum_attempts=options.max_attempts,
                       non_retryable_error_types=list(WebhookErrorType.PERMANENT))


async def webhook_step(step: WebhookStep, journey: JourneySnapshot, context: dict[str, Any]) -> WebhookRecord:
    """Runs ``step``'s call; on success saves the JSON in ``context``. Never raises for a failed call."""
    workflow_id = workflow.info().workflow_id
    timeout = parse_duration(step.timeout)
    call = WebhookCallInput(
        idempotency_key=f"{workflow_id}/{step.id}", workflow_id=workflow_id, journey_id=journey.id, step_id=step.id,
        method=step.method.value, url_template=step.url, context=context,
        secret_headers={header.name: header.secret for header in step.headers},
        body_template=step.body if isinstance(step.body, str) else None,
        body_document=step.body if isinstance(step.body, (dict, list)) else None,
        timeout_seconds=timeout.total_seconds(), max_response_bytes=step.max_response_bytes,
        expect_json=step.save_as is not None)
    try:
        result: WebhookCallResult = await workflow.execute_activity(
            WEBHOOK_CALL, call, result_type=WebhookCallResult, start_to_close_timeout=timeout + _ACTIVITY_MARGIN,
            retry_policy=retry_policy(step.retry))
    except ActivityError as err:
        cause = err.cause
        error_type = (cause.type if isinstance(cause, ApplicationError) and cause.type
                      else "ActivityTimeout" if isinstance(cause, TimeoutError) else "ActivityError")
        workflow.logger.warning("webhook failed step=%s error_type=%s", step.id, error_type)
        return WebhookRecord(step.id, WebhookStatus.FAILED, error_type=error_type)
    if step.save_as:
        context.setdefault(WEBHOOKS_CONTEXT_KEY, {})[step.save_as] = result.data
    return WebhookRecord(step.id, WebhookStatus.OK, result.status_code)
