"""Broadcasts end to end on the real Temporal and PostgreSQL, sends counted at the SendGrid stub.

A broadcast to a segment's members sends to each exactly once, also when the worker running it is
killed -9 midway; a cancel stops it (nothing reaches the provider after it returns); the audience
is fixed when the broadcast starts; local times are each recipient's own; a broadcast of a topic
reaches only the members who consented to it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client

from activities.outcomes import DeliveryOutcome, DeliveryReport
from activities.send import NotificationActivities, SendPolicy
from activities.topics import ConsentDefault, Topic, TopicCatalog
from devstack import Endpoints
from journeys._yaml import load_located
from journeys.segments import Attributes, ValueType, parse_segment
from store import CustomerStore, FieldCipher, PostgresLedger, StoreMetrics
from store.broadcast_activities import BroadcastActivities
from store.broadcasts import Broadcast, BroadcastMessage, BroadcastState, BroadcastStore
from store.consent import ConsentChange, ConsentStore
from store.customers import ProfileWrite
from store.feedback import StoreFeedback
from store.segments import SegmentStore
from tests.activities.journey_support import channels_for
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually
from tests.store.broadcast_worker import worker
from workflows.broadcast import BROADCAST_WORKFLOW, BatchInput, BroadcastInput, broadcast_workflow_id
from workflows.profile import ProfileUpdate
from workflows.suppression import DeliveryFeedback

__all__ = ["provider"]

REPO = Path(__file__).resolve().parents[2]
MESSAGE = BroadcastMessage("email", "news", "en", {"en": {"subject": "News", "body": "Hello {{ customer.first_name }}"},
                                                   "de": {"subject": "Neuigkeiten", "body": "Hallo"}})


async def audience(pool: asyncpg.Pool, tag: str, count: int, *, zone: str = "UTC") -> list[str]:
    """``count`` customers with an email, in a segment of their own (attributes.tier == tag)."""
    ids = [f"{tag}-{n:04d}" for n in range(count)]
    when = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    await CustomerStore(pool, FieldCipher(None)).apply_profile_updates([ProfileWrite(c, ProfileUpdate(
        uuid.uuid4().hex, when, email=f"{c}@example.com", first_name="Kim", timezone=zone,
        attributes={"tier": tag})) for c in ids])
    segment = segment_of(tag)
    await SegmentStore(pool, [segment]).observe([], ids)
    return ids


def segment_of(tag: str):
    parsed, problems = parse_segment("t.yaml", load_located(
        f"id: {tag.replace('-', '_')}\nversion: 1\nmatch: {{profile: attributes.tier, equals: {tag}}}\n"),
        Attributes({"tier": ValueType.STRING}), None)
    assert parsed is not None, problems
    return parsed


async def start(client: Client, store: BroadcastStore, queue: str, broadcast_id: str, tag: str, *,
                rate: float = 1000.0, batch: int = 25, at: datetime | None = None, local: time | None = None,
                message: BroadcastMessage = MESSAGE) -> None:
    await store.create(Broadcast(broadcast_id, segment_of(tag).id, message, at or datetime.now(UTC), rate, local))
    await client.start_workflow(BROADCAST_WORKFLOW, BroadcastInput(broadcast_id, rate, batch),
                                id=broadcast_workflow_id(broadcast_id), task_queue=queue)


def per_recipient(stub: ProviderStub, broadcast_id: str) -> dict[str, int]:
    return {key: n for key, n in stub.accepted_by_key().items() if key.startswith(f"broadcast:{broadcast_id}:")}


@asynccontextmanager
async def killable_worker(endpoints: Endpoints, queue: str, base_url: str, dsn: str) -> AsyncIterator[
        asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.store.broadcast_worker", endpoints.temporal_address, queue, base_url, dsn,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"worker-ready"
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.timeout(300)
async def test_each_member_gets_the_broadcast_once_with_the_worker_killed_midway(
        temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str, provider: ProviderStub,
        endpoints: Endpoints, unique: str) -> None:
    members = await audience(store_pool, f"kill-{unique}", 1000)
    store, queue, broadcast_id = BroadcastStore(store_pool), f"test-broadcast-{unique}", f"b-{unique}"
    async with killable_worker(endpoints, queue, provider.base_url, store_dsn) as first:
        await start(temporal_client, store, queue, broadcast_id, f"kill-{unique}", batch=100)
        await eventually(lambda: len(per_recipient(provider, broadcast_id)) >= 300, timeout_seconds=120,
                         message="a third of the broadcast sent")
        provider.hold()  # the next sends wait at the provider, so the kill lands mid-batch, midway
        await asyncio.wait_for(provider.held.wait(), 30)
        first.kill()
        await first.wait()
        provider.release()
    # What SendGrid's event webhook would say: the requests that reached it were processed. The
    # successor resolves each uncertain send from these reports and sends again where none came.
    feedback = StoreFeedback(store_pool)
    for key in per_recipient(provider, broadcast_id):
        await feedback.report(DeliveryFeedback(DeliveryReport(
            idempotency_key=key, customer_id=key.rsplit(":", 1)[1], channel="email", provider="sendgrid",
            outcome=DeliveryOutcome.ACCEPTED, at=datetime.now(UTC).isoformat(), provider_message_id="sg-1",
            report_id=f"sg-event-{key}")))
    reporting = SendPolicy(lease_seconds=8.0, providers_reporting=frozenset({"sendgrid"}), report_window_seconds=1.0,
                           report_poll_seconds=0.2)
    async with worker(temporal_client, queue, provider.base_url, store_pool, reporting):
        handle = temporal_client.get_workflow_handle(broadcast_workflow_id(broadcast_id))
        assert (await asyncio.wait_for(handle.result(), 120))["state"] == "completed"
    sent = per_recipient(provider, broadcast_id)
    progress = await store.progress(broadcast_id)
    assert len(sent) == len(members), (f"missing: {len(members) - len(sent)}", progress)
    assert set(sent.values()) == {1}, {k: n for k, n in sent.items() if n != 1}
    progress = await store.progress(broadcast_id)
    assert (progress.state, progress.planned, progress.sent, progress.remaining) == (
        BroadcastState.COMPLETED, len(members), len(members), 0)


async def test_nothing_is_sent_after_cancel_returns_and_late_joiners_are_not_served(
        temporal_client: Client, store_pool: asyncpg.Pool, provider: ProviderStub, unique: str) -> None:
    tag = f"cancel-{unique}"
    await audience(store_pool, tag, 60)
    store, queue, broadcast_id = BroadcastStore(store_pool), f"test-broadcast-{unique}", f"c-{unique}"
    async with worker(temporal_client, queue, provider.base_url, store_pool):
        await start(temporal_client, store, queue, broadcast_id, tag, rate=20.0, batch=10)
        await eventually(lambda: len(per_recipient(provider, broadcast_id)) >= 10, message="the first batch")
        # Joins after the start: not in the fixed audience.
        late = await audience(store_pool, tag, 61)
        assert await store.cancel(broadcast_id) is BroadcastState.CANCELLED
        at_cancel = len(provider.sends())
        handle = temporal_client.get_workflow_handle(broadcast_workflow_id(broadcast_id))
        assert (await asyncio.wait_for(handle.result(), 60))["state"] == "cancelled"
    assert len(provider.sends()) == at_cancel, "a send reached the provider after the cancel returned"
    sent = per_recipient(provider, broadcast_id)
    assert sent and len(sent) < 60 and set(sent.values()) == {1}
    assert f"broadcast:{broadcast_id}:{late[-1]}" not in sent
    progress = await store.progress(broadcast_id)
    assert progress.planned == 60 and progress.state is BroadcastState.CANCELLED


async def test_a_local_time_is_each_recipients_own(store_pool: asyncpg.Pool, unique: str) -> None:
    berlin, new_york = f"berlin-{unique}", f"newyork-{unique}"
    await audience(store_pool, berlin, 1, zone="Europe/Berlin")
    await audience(store_pool, new_york, 1, zone="America/New_York")
    store = BroadcastStore(store_pool)
    at = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)  # 13:00 in Berlin, 07:00 in New York
    for tag in (berlin, new_york):
        await store.create(Broadcast(f"l-{tag}", segment_of(tag).id, MESSAGE, at, 10.0, time(10, 0)))
        assert await store.fix_audience(f"l-{tag}") == (BroadcastState.RUNNING, 1)
        assert await store.fix_audience(f"l-{tag}") == (BroadcastState.RUNNING, 1)  # fixed once
    due = {row["broadcast_id"]: row["due_at"] for row in await store_pool.fetch(
        "SELECT broadcast_id, due_at FROM eventflow.broadcast_recipients WHERE broadcast_id = ANY($1)",
        [f"l-{berlin}", f"l-{new_york}"])}
    assert due[f"l-{berlin}"] == datetime(2026, 12, 11, 9, 0, tzinfo=UTC)  # 10:00 had passed there: the next day's
    assert due[f"l-{new_york}"] == datetime(2026, 12, 10, 15, 0, tzinfo=UTC)  # 10:00 EST, later that day


async def test_a_batch_reads_its_recipients_profiles_with_the_batch_not_once_per_recipient(
        store_pool: asyncpg.Pool, provider: ProviderStub, unique: str) -> None:
    tag = f"read-{unique}"
    members = await audience(store_pool, tag, 12)
    registry = CollectorRegistry()
    contacts = CustomerStore(store_pool, FieldCipher(None), metrics=StoreMetrics(registry))
    sender = NotificationActivities(channels_for(provider.base_url), ledger=PostgresLedger(store_pool),
                                    contacts=contacts)
    store, broadcast_id = BroadcastStore(store_pool), f"r-{unique}"
    activities = BroadcastActivities(store, sender, contacts=contacts)
    await store.create(Broadcast(broadcast_id, segment_of(tag).id, MESSAGE, datetime.now(UTC), 1000.0))
    assert (await activities.start(broadcast_id)).planned == len(members)

    result = await activities.send_batch(BatchInput(broadcast_id, 50))

    assert (result.handled, result.remaining) == (len(members), 0)
    addresses = [to["email"] for sent in provider.sends() for p in sent.body["personalizations"] for to in p["to"]]
    assert sorted(addresses) == [f"{member}@example.com" for member in members]  # each once, at their own address
    reads = registry.get_sample_value("eventflow_db_statement_seconds_count", {"kind": "profile_read"})
    assert reads == 0, "a profile read per recipient: the batch already read them"
async def test_a_broadcast_of_a_topic_reaches_only_the_members_who_consented(
        temporal_client: Client, store_pool: asyncpg.Pool, provider: ProviderStub, unique: str) -> None:
    tag = f"topic-{unique}"
    members = await audience(store_pool, tag, 3)
    topics = TopicCatalog((Topic("news", {"en": "News"}, channels=("email",), default=ConsentDefault.OPTED_OUT),))
    # Explicit opt-in: only the member who subscribed may get it; the others never chose.
    await ConsentStore(store_pool).apply(members[0], [ConsentChange("email", "news", subscribed=True)], topics,
                                         source="test")
    store, queue, broadcast_id = BroadcastStore(store_pool), f"test-broadcast-{unique}", f"t-{unique}"
    message = BroadcastMessage(MESSAGE.channel, MESSAGE.template_id, MESSAGE.default_locale, MESSAGE.variants,
                               topic="news")
    async with worker(temporal_client, queue, provider.base_url, store_pool, topics=topics):
        await start(temporal_client, store, queue, broadcast_id, tag, message=message)
        handle = temporal_client.get_workflow_handle(broadcast_workflow_id(broadcast_id))
        assert (await asyncio.wait_for(handle.result(), 60))["state"] == "completed"
    assert per_recipient(provider, broadcast_id) == {f"broadcast:{broadcast_id}:{members[0]}": 1}
    progress = await store.progress(broadcast_id)
    assert (progress.sent, progress.skipped) == (1, {"no_consent": 2})
    assert (await store.get(broadcast_id)).message.topic == "news", "the topic is kept in the message snapshot"

