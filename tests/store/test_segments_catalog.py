"""Segments published on the catalog topic, followed live by a consumer, on the real Kafka and PostgreSQL.

The consumer is wired as `eventflow.consume` wires it with ``EVENTFLOW_CATALOG_SOURCE=kafka``
(`follow_catalog` + `follow_segments`, the follower and the refresher beside the poll loop). "The
consumer follows version N" is read off its running `SegmentStore`, never waited for by time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from temporalio.client import Client

from consumer.catalog_admin import publish_segments
from consumer.catalog_routes import follow_catalog, follow_segments
from consumer.catalog_topic import CatalogWriter
from consumer.dispatch import Dispatcher
from consumer.routes import SegmentRoutes
from consumer.segment_triggers import SegmentRefresher
from eventflow.cli import main
from events import samples
from journeys.catalog import SIGNATURE_HEADER, SourceFile, sign_record
from journeys.segment_catalog import encode_segment_entry, next_segment_entry
from journeys.segments import load_segments
from store import CustomerBatcher, CustomerStore, FieldCipher
from store.segments import SegmentBatcher, SegmentStore
from tests.catalog_keys import CATALOG_KEYS, CATALOG_KEYS_TEXT, FORGED_KEYS
from tests.harness import eventually, start_bridge

SEGMENT = "catalog_buyers"
_DEFINITION = "id: catalog_buyers\nversion: 1\nmatch: {{event: PurchaseCompleted, count: {{at_least: {n}}}, within: 30d}}\n"


def _write(root: Path, purchases: int) -> Path:
    (root / "audiences").mkdir(parents=True, exist_ok=True)
    path = root / "audiences" / f"{SEGMENT}.yaml"
    path.write_text(_DEFINITION.format(n=purchases))
    return path


async def _publish(writer: CatalogWriter, root: Path, purchases: int) -> int:
    [result] = await asyncio.to_thread(publish_segments, writer, _write(root, purchases), author="tester",
                                       summary=f"at least {purchases}")
    assert result.entry is not None
    return result.entry.version


async def _changes(pool: asyncpg.Pool, customer_id: str) -> list[tuple[str, int]]:
    rows = await pool.fetch("SELECT change, version FROM eventflow.segment_changes WHERE segment_id = $1"
                            " AND customer_id = $2 ORDER BY id", SEGMENT, customer_id)
    return [(row["change"], row["version"]) for row in rows]


def _produce_forged(kafka_config: dict[str, str], topic: str, root: Path) -> None:
    """A v3 (at least 3 purchases) whose signature was made with a key the readers were never given."""
    definition = _write(root, 3)
    [segment] = load_segments(root)
    published = CatalogWriter(kafka_config, topic, keys=CATALOG_KEYS).read_segments()
    entry = next_segment_entry(published, segment, definition=SourceFile("audiences/x.yaml", definition.read_text()),
                               attributes=None, author="mallory", at=datetime.now(UTC), summary="forged")
    assert entry is not None and entry.version == 3
    key, value = encode_segment_entry(entry)
    producer = Producer(dict(kafka_config))
    producer.produce(topic, key=key, value=value, partition=0,
                     headers=[(SIGNATURE_HEADER, sign_record(key, value, FORGED_KEYS).encode())])
    assert producer.flush(10) == 0


async def test_a_published_version_switches_a_running_consumer_and_a_forged_one_is_skipped(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        store_pool: asyncpg.Pool) -> None:
    writer = CatalogWriter(kafka_config, f"test-catalog-{unique}", keys=CATALOG_KEYS)
    assert await _publish(writer, tmp_path, 1) == 1
    routes, follower = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS,
                                            registry=CollectorRegistry())
    store = SegmentStore(store_pool, [])
    refresher = SegmentRefresher(store, interval_seconds=3600)  # only a publish refreshes in this test
    follow_segments(follower, store, refresher)
    assert [(s.id, s.version) for s in store.segments] == [(SEGMENT, 1)]
    bridge = await start_bridge(
        kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=tmp_path / "unused", suffix=unique,
        router=SegmentRoutes(routes, store), with_worker=False, background=[follower, refresher],
        dispatcher=Dispatcher(temporal_client, f"test-journeys-{unique}",
                              CustomerBatcher(CustomerStore(store_pool, FieldCipher(None))), SegmentBatcher(store)))
    try:
        early, late = samples.customer(), samples.customer()
        await bridge.publish(samples.purchase(early))
        await eventually(lambda: _changes(store_pool, early["id"]), message="one purchase to admit under v1")
        assert await _changes(store_pool, early["id"]) == [("entered", 1)]

        # v2 needs two purchases: the running consumer switches, and the member v2 no longer admits leaves.
        assert await _publish(writer, tmp_path, 2) == 2
        await eventually(lambda: [s.version for s in store.segments] == [2], message="the consumer to follow v2")
        await eventually(lambda: _left(store_pool, early["id"]), message="the v1 member to leave under v2")
        assert await _changes(store_pool, early["id"]) == [("entered", 1), ("left", 2)]

        await bridge.publish(samples.purchase(late))
        await eventually(lambda: _recorded(store_pool, late["id"], 1), message="the late customer's purchase")
        assert await _changes(store_pool, late["id"]) == [], "one purchase no longer admits"
        await bridge.publish(samples.purchase(late))
        await eventually(lambda: _changes(store_pool, late["id"]), message="two purchases to admit under v2")
        assert await _changes(store_pool, late["id"]) == [("entered", 2)]
        assert await store_pool.fetchval("SELECT version FROM eventflow.segment_members WHERE segment_id = $1"
                                         " AND customer_id = $2", SEGMENT, late["id"]) == 2

        # A forged v3 is skipped, counted and named on readiness; v2 keeps applying.
        await asyncio.to_thread(_produce_forged, kafka_config, writer.topic, tmp_path / "forged")
        invalid = follower.metrics.invalid_entries.labels("signature")
        await eventually(lambda: invalid._value.get() == 1, message="the forged entry to be counted")
        ready, detail = follower.readiness()
        assert ready and f"segment catalog records skipped, the last accepted versions apply: {SEGMENT}: " \
                         "offset 2: signature" in detail
        assert [s.version for s in store.segments] == [2]
        assert follower.metrics.rejected_segments._value.get() == 1
    finally:
        await bridge.stop()


async def _left(pool: asyncpg.Pool, customer_id: str) -> bool:
    return ("left", 2) in await _changes(pool, customer_id)


async def _recorded(pool: asyncpg.Pool, customer_id: str, count: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM eventflow.customer_events WHERE customer_id = $1",
                               customer_id) == count


def test_the_commands_publish_only_valid_segments_and_show_their_history(
        kafka_config: dict[str, str], tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_CATALOG_TOPIC", f"test-catalog-{unique}")
    monkeypatch.setenv("EVENTFLOW_CATALOG_SIGNING_KEYS", CATALOG_KEYS_TEXT)
    bad = tmp_path / "bad"
    _write(bad, 1).write_text("id: catalog_buyers\nversion: 1\nmatch: {profile: attributes.tier, equals: gold}\n")
    assert main(["segments", "publish", str(bad), "-m", "bad"]) == 1
    err = capsys.readouterr().err
    assert "catalog_buyers.yaml:3: unknown profile field 'attributes.tier'" in err and "nothing published" in err

    good = tmp_path / "good"
    _write(good, 1)
    assert main(["segments", "publish", str(good), "--author", "ana", "-m", "first"]) == 0
    assert main(["segments", "publish", str(good / "audiences"), "--author", "ana"]) == 0  # unchanged
    _write(good, 2)
    assert main(["segments", "publish", str(good / "audiences" / f"{SEGMENT}.yaml"), "--author", "bo",
                 "-m", "two now"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out if line.startswith(("published", "unchanged"))] == [
        ["published", SEGMENT], ["unchanged", SEGMENT], ["published", SEGMENT]]
    assert main(["segments", "history", SEGMENT]) == 0
    history = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("rev")]
    assert [(h[1], h[2], h[3], h[6], h[-1]) for h in history] == [
        ("1", "v1", "publish", "ana", "first"), ("2", "v2", "publish", "bo", "now")]
    assert main(["segments", "history", "nobody"]) == 1
    monkeypatch.setenv("EVENTFLOW_CATALOG_SOURCE", "kafka")  # list, show, preview and broadcasts read the topic
    capsys.readouterr()
    assert main(["segments", "show", SEGMENT]) == 0
    assert capsys.readouterr().out.startswith(f"{SEGMENT} v2 (catalog:{SEGMENT}@v2)")
