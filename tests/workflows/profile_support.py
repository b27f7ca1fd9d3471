"""Journeys on a shipping event that knows only the customer id, run through the real consumer and worker."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client

from events import samples
from journeys.loader import load_all
from tests.activities.journey_support import channels_for, worker
from tests.activities.provider_stub import ProviderStub
from tests.harness import Bridge, start_bridge

#: ``ship_note`` sends at once; ``ship_wait`` (carrier ``slow``) waits for a ProfileUpdated, then sends.
DEFINITIONS = {
    "ship_note": """
id: ship_note
version: 1
trigger:
  event: OrderShipped
  filter: "payload.carrier != 'slow'"
entry:
  rule: every_time
steps:
  - id: note
    send:
      channel: email
      template: ship_note
""",
    "ship_wait": """
id: ship_wait
version: 1
trigger:
  event: OrderShipped
  filter: "payload.carrier == 'slow'"
entry:
  rule: once
steps:
  - id: wait_profile
    wait_for:
      event: ProfileUpdated
      timeout: 1h
      received:
        - id: late_note
          send:
            channel: email
            template: ship_note
""",
}
TEMPLATE = """
id: ship_note
default_locale: en
channels:
  email:
    en:
      subject: "Order {{ payload.order_id }} is on its way"
      body: "Hi {{ profile.first_name or 'there' }}, {{ payload.carrier }} has order {{ payload.order_id }}. Tier {{ profile.attributes.tier | default('none') }}."
    de:
      subject: "Bestellung {{ payload.order_id }} ist unterwegs"
      body: "Hallo {{ profile.first_name or '' }}, {{ payload.carrier }} bringt {{ payload.order_id }}."
"""
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def definitions(folder: Path) -> Any:
    (folder / "definitions").mkdir(parents=True)
    (folder / "templates").mkdir()
    for name, text in DEFINITIONS.items():
        (folder / "definitions" / f"{name}.yaml").write_text(text)
    (folder / "templates" / "ship_note.yaml").write_text(TEMPLATE)
    return load_all(folder)


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def identify(customer_id: str, minutes: int, **contact: Any) -> dict[str, Any]:
    """A ``ProfileUpdated`` (an identify event) occurring ``minutes`` after T0."""
    event = samples.event("ProfileUpdated", {"id": customer_id, **contact}, {"changed_fields": sorted(contact)})
    return {**event, "occurred_at": _at(minutes)}


def shipped(customer_id: str, minutes: int, *, carrier: str = "dhl", **contact: Any) -> dict[str, Any]:
    """An ``OrderShipped`` whose customer block has only the id (plus ``contact``, if given)."""
    event = samples.event("OrderShipped", {"id": customer_id, **contact}, {
        "order_id": f"ord-{uuid.uuid4().hex[:6]}", "carrier": carrier, "tracking_number": "trk-1",
        "estimated_delivery_at": None})
    return {**event, "occurred_at": _at(minutes)}


def note_id(customer_id: str, event: dict[str, Any]) -> str:
    return f"journey:ship_note:{customer_id}:event:{event['event_id']}"


def wait_id(customer_id: str) -> str:
    return f"journey:ship_wait:{customer_id}"


def recipients(provider: ProviderStub) -> list[str]:
    return [to["email"] for sent in provider.sends() for p in sent.body["personalizations"] for to in p["to"]]


@dataclass
class Running:
    bridge: Bridge
    provider: ProviderStub


@contextlib.asynccontextmanager
async def running(kafka_config: dict[str, str], client: Client, topic: str, folder: Path, unique: str,
                  provider: ProviderStub) -> AsyncIterator[Running]:
    """The real consumer on ``topic`` and a worker whose channels reach the provider stub."""
    bridge = await start_bridge(kafka_config=kafka_config, client=client, topic=topic,
                                outbox=folder / "unused.jsonl", suffix=unique, with_worker=False,
                                definitions=definitions(folder / "journeys"))
    try:
        async with worker(client, bridge.task_queue, channels_for(provider.base_url)):
            yield Running(bridge, provider)
    finally:
        await bridge.stop()


def decoded_history_text(history_json: str) -> str:
    """A history's JSON with every payload's data decoded (base64 -> text) next to it, for searching."""
    parts = [history_json]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and "metadata" in node:
                parts.append(base64.b64decode(data).decode("utf-8", "replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(parts)
