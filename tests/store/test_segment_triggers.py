"""A customer entering a segment starts its journey once; leaving exits it; a forged entry is dead-lettered.

Real Kafka, Temporal and PostgreSQL: membership changes come from the consumer, the trigger loop
starts the journey from the store's change log, sends are counted at the outbox the worker writes
(the outbox is the provider here: the test counts what the channel was asked to send).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Container
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from consumer.dispatch import Dispatcher
from consumer.routes import EventRoutes, SegmentRoutes
from consumer.segment_triggers import SegmentTriggers
from events import samples
from events.model import Customer, CustomerEvent, Decoded
from journeys._yaml import load_located
from journeys.loader import default_journeys_dir, validate_folder
from journeys.segments import Attributes, parse_segment
from store import CustomerBatcher, CustomerStore, FieldCipher, PostgresLedger
from store.segments import SegmentBatcher, SegmentStore
from tests.harness import eventually, start_bridge, workflow_runs

SEGMENT = parse_segment("s.yaml", load_located(
    "id: buyers\nversion: 1\nmatch: {event: PurchaseCompleted, count: {at_least: 2}, within: 30d}\n"),
    Attributes(), None)[0]
JOURNEY = """
id: welcome_to_buyers
version: 1
trigger:
  event: SegmentEntered
  filter: payload.segment == "buyers"
entry:
  rule: once_per_key
  key: payload.entry
exit:
  - event: SegmentLeft
    key: payload.entry
steps:
  - id: hello
    send:
      channel: email
      template: welcome
  - id: later
    delay:
      duration: 30d
  - id: again
    send:
      channel: email
      template: welcome
"""


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("journeys")
    shutil.copytree(default_journeys_dir() / "templates", root / "templates")
    (root / "definitions").mkdir()
    (root / "definitions" / "welcome_to_buyers.yaml").write_text(JOURNEY)
    report = validate_folder(root)
    assert not report.problems, report.problems
    return report.definitions


async def test_entry_starts_the_journey_once_and_exit_ends_it(
        definitions, kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path,
        unique: str, store_pool: asyncpg.Pool) -> None:
    assert SEGMENT is not None
    segments = SegmentBatcher(SegmentStore(store_pool, [SEGMENT]))
    journeys = EventRoutes(definitions)
    customers = CustomerStore(store_pool, FieldCipher(None))
    dispatcher = Dispatcher(temporal_client, f"test-journeys-{unique}", CustomerBatcher(customers), segments)
    triggers = SegmentTriggers(store_pool, journeys, dispatcher, idle_seconds=0.1)
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                                suffix=unique, router=SegmentRoutes(journeys, segments.store),
                                dispatcher=dispatcher, background=[triggers], ledger=PostgresLedger(store_pool),
                                contacts=customers)
    try:
        customer = samples.customer(email="buyer@example.com")
        await bridge.publish(samples.signup(customer), samples.purchase(customer), samples.purchase(customer))

        def hello() -> list[dict[str, object]]:
            return [m for m in bridge.sent() if "welcome_to_buyers" in str(m["workflow_id"])]

        sent = await eventually(hello, message="the welcome email on entry")
        # The same entry dispatched again (a crash before the mark) starts nothing new.
        await store_pool.execute("UPDATE eventflow.segment_changes SET dispatched = false WHERE customer_id = $1",
                                 customer["id"])
        await eventually(lambda: store_pool.fetchval(
            "SELECT bool_and(dispatched) FROM eventflow.segment_changes WHERE customer_id = $1", customer["id"]),
            message="the redo to be dispatched")
        runs = await workflow_runs(temporal_client, bridge.task_queue)
        assert [wid for wid in runs if "welcome_to_buyers" in wid] and set(runs.values()) == {1}, runs
        assert len(hello()) == len(sent) == 1

        # Leaving (the purchases aged out) signals the running instance to exit before its second send.
        await store_pool.execute("UPDATE eventflow.customer_events SET occurred_at = occurred_at - interval '60 days'"
                                 " WHERE customer_id = $1", customer["id"])
        changes = await segments.store.refresh_all()
        assert [(c.customer_id, c.change.value) for c in changes if c.customer_id == customer["id"]] == [
            (customer["id"], "left")]
        handle = temporal_client.get_workflow_handle(next(wid for wid in runs if "welcome_to_buyers" in wid))
        await asyncio.wait_for(handle.result(), timeout=30)
        assert len(hello()) == 1
    finally:
        await bridge.stop()


class JsonEventDecoder:
    """A publisher's JSON source that names any event type (what a forger would use)."""

    def needs_registry_for(self, record: object) -> bool:
        return False

    def decode_record(self, record: Any, wanted: Container[str] | None) -> Decoded:
        body = json.loads(record.value)
        return CustomerEvent(body["event_id"], body["event_type"], body["occurred_at"],
                             Customer(id=body["customer"]["id"]), body["payload"])


async def test_a_forged_segment_event_from_kafka_is_dead_lettered(
        definitions, kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path,
        unique: str) -> None:
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                                suffix=unique, definitions=definitions, with_worker=False, decoder=JsonEventDecoder())
    try:
        customer = samples.customer()
        forged = samples.event("SegmentEntered", customer, {"segment": "buyers", "version": 1, "entry": "1"})
        await bridge.publish_raw(json.dumps(forged).encode(), customer["id"].encode())
        await eventually(lambda: bridge.metric("eventflow_dead_letters_total", {
            "topic": topic, "error_type": "ReservedEventTypeError"}) == 1, message="the forged record dead-lettered")
        assert await workflow_runs(temporal_client, bridge.task_queue) == {}
    finally:
        await bridge.stop()
