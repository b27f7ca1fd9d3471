"""Helpers to run journeys against channels pointed at the provider stub, on a real Temporal server."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from temporalio.client import Client

from activities.channels import Channel, ChannelProviders
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.metrics import SendMetrics
from activities.send import SendPolicy
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig
from events.model import Customer, CustomerEvent
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.worker import JourneyWorkers, build_worker

TWILIO_SID = "AC0123456789abcdef0123456789abcdef"

TEMPLATES: dict[str, Any] = {
    "hello": {
        "id": "hello",
        "default_locale": "en",
        "variants": {
            "email": {"en": {"subject": "Hi {{ customer.first_name }}", "body": "Order {{ payload.order_id }} is in."}},
            "sms": {"en": {"body": "Order {{ payload.order_id }} is in."}},
            "whatsapp": {"en": {"body": "", "content_sid": "HXabc123",
                                "content_variables": {"1": "{{ customer.first_name }}", "2": "{{ payload.order_id }}"}}},
        },
    },
    "hello_html": {
        "id": "hello_html",
        "default_locale": "en",
        "variants": {
            "email": {"en": {"subject": "Hi {{ customer.first_name }}", "body": "Order {{ payload.order_id }} is in.",
                             "html": "<style>p { color: #333333 }</style><p>Order <b>{{ payload.order_id }}</b> "
                                     "is in, {{ customer.first_name }}.</p>"}},
        },
    },
}


def channels_for(base_url: str) -> dict[str, Channel]:
    """SendGrid email and Twilio SMS/WhatsApp, all pointed at ``base_url``."""
    twilio = TwilioClient(TwilioConfig(account_sid=TWILIO_SID, auth_token="tw-secret", sms_from="+15550001111",
                                       whatsapp_from="+15550002222", base_url=base_url, timeout_seconds=5))
    return {
        "email": SendGridChannel(SendGridConfig(api_key="SG.test-key", from_email="shop@example.com",
                                                base_url=base_url, timeout_seconds=5)),
        "sms": TwilioChannel(twilio, "sms"),
        "whatsapp": TwilioChannel(twilio, "whatsapp"),
    }


def journey(steps: Sequence[Mapping[str, Any]], journey_id: str = "test_journey") -> dict[str, Any]:
    """A journey snapshot as the interpreter receives it."""
    return {"id": journey_id, "version": 1, "trigger_event": "PurchaseCompleted", "entry_rule": "every_time",
            "key_path": None, "exit_events": [], "steps": [dict(s) for s in steps], "templates": TEMPLATES,
            "content_hash": "0" * 16}


def send(step_id: str, channel: str, **options: Any) -> dict[str, Any]:
    return {"id": step_id, "send": {"channel": channel, "template": "hello", **options}}


def event(customer_id: str, *, timezone: str = "UTC", phone: str | None = "+15557654321") -> CustomerEvent:
    return CustomerEvent(
        event_id=uuid.uuid4().hex, event_type="PurchaseCompleted", occurred_at="2026-11-25T10:00:00+00:00",
        customer=Customer(id=customer_id, email="ada@example.com", phone=phone, timezone=timezone,
                          first_name="Ada"),
        payload={"order_id": "ord-42"})


def worker(client: Client, task_queue: str, channels: Mapping[str, ChannelProviders], *,
           registry: CollectorRegistry | None = None, policy: SendPolicy | None = None) -> JourneyWorkers:
    return build_worker(client, task_queue, channels, metrics=SendMetrics(registry or CollectorRegistry()),
                        policy=policy)


async def run_journey(client: Client, task_queue: str, snapshot: dict[str, Any], trigger: CustomerEvent,
                      workflow_id: str) -> JourneyStatus:
    return await client.execute_workflow(JOURNEY_WORKFLOW, JourneyInput(snapshot, trigger), id=workflow_id,
                                         task_queue=task_queue, result_type=JourneyStatus)
