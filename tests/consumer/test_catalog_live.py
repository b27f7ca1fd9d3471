"""The live journey catalog on the real broker and server: publish, pause and roll back without a restart.

Each test has its own catalog topic, event topic and task queue. The consumer follows the catalog
as `eventflow.consume` wires it (`follow_catalog`, the follower run beside the poll loop); the worker
sends through SendGrid's SDK to the provider stub, where sends are counted. "The consumer has seen
version N" is read off the running consumer's routes (`LiveRoutes.position`), never waited for by time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from temporalio.client import Client, WorkflowExecutionStatus

from consumer.catalog_admin import CatalogValidationError, change, diff, publish_path
from consumer.catalog_routes import LiveRoutes, follow_catalog
from consumer.catalog_topic import CatalogFollower, CatalogUnavailableError, CatalogWriter
from consumer.record import SourceRecord
from events import samples
from journeys.catalog import (
    SIGNATURE_HEADER,
    CatalogAction,
    CatalogEntry,
    JourneyState,
    RejectReason,
    content_hash,
    encode_entry,
    sign_record,
    with_version,
)
from tests.activities.journey_support import channels_for, worker
from tests.activities.provider_stub import ProviderStub, Recorded, provider
from tests.catalog_keys import CATALOG_KEYS, CATALOG_KEYS_TEXT, FORGED_KEYS
from tests.harness import Bridge, eventually, start_bridge

__all__ = ["provider"]

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "journeys" / "templates"
JOURNEY = "catalog_thanks"

_SEND = """\
id: catalog_thanks
version: 1
trigger:
  event: PurchaseCompleted
entry:
  rule: once_per_key
  key: payload.order_id
steps:
{wait}  - id: thanks
    send:
      channel: email
      template: {template}
"""
_WAIT = """\
  - id: wait_for_shipping
    wait_for:
      event: OrderShipped
      timeout: 1h
"""


def _write(folder: Path, template: str, *, wait: bool = False, text: str | None = None) -> Path:
    """A journeys folder (definitions/ and templates/) with the one test journey; returns its definition file."""
    (folder / "definitions").mkdir(parents=True, exist_ok=True)
    if not (folder / "templates").exists():
        shutil.copytree(REPO_TEMPLATES, folder / "templates")
    path = folder / "definitions" / f"{JOURNEY}.yaml"
    path.write_text(text if text is not None else _SEND.format(template=template, wait=_WAIT if wait else ""))
    return path


def _subjects(stub: ProviderStub, order_id: str) -> list[str]:
    sends: list[Recorded] = stub.sends()
    return [str(s.body.get("subject")) for s in sends if order_id in str(s.body.get("subject"))]


def _seen(routes: LiveRoutes, version: int, state: JourneyState = JourneyState.ACTIVE) -> bool:
    return routes.position().get(JOURNEY) == (version, state)


@pytest.fixture
def writer(kafka_config: dict[str, str], unique: str) -> CatalogWriter:
    writer = CatalogWriter(kafka_config, f"test-catalog-{unique}", keys=CATALOG_KEYS)
    writer.ensure_topic()
    return writer


@asynccontextmanager
async def _running(kafka_config: dict[str, str], client: Client, topic: str, tmp_path: Path, suffix: str,
                   writer: CatalogWriter, stub: ProviderStub) -> AsyncIterator[tuple[Bridge, LiveRoutes,
                                                                                   CatalogFollower]]:
    routes, follower = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS, registry=CollectorRegistry())
    bridge = await start_bridge(kafka_config=kafka_config, client=client, topic=topic, outbox=tmp_path / "unused",
                                suffix=suffix, with_worker=False, router=routes, background=[follower])
    try:
        async with worker(client, bridge.task_queue, channels_for(stub.base_url)):
            yield bridge, routes, follower
    finally:
        await bridge.stop()


async def _publish(writer: CatalogWriter, path: Path, summary: str) -> int:
    [result] = await asyncio.to_thread(publish_path, writer, path, author="tester", summary=summary)
    assert result.entry is not None
    return result.entry.version


async def test_publish_starts_the_next_event_without_restart_and_pause_lets_the_running_instance_finish(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        writer: CatalogWriter, provider: ProviderStub) -> None:
    customer = samples.customer(locale="en")
    before = samples.purchase(customer)
    async with _running(kafka_config, temporal_client, topic, tmp_path, unique, writer, provider) as (
            bridge, routes, _):
        # Not in the catalog yet: the event is consumed and starts nothing.
        await bridge.publish(before)
        await eventually(lambda: bridge.metric("eventflow_events_consumed_total",
                                               {"topic": topic, "event_type": "PurchaseCompleted",
                                                "outcome": "unrouted"}) == 1, message="the unrouted event")

        assert await _publish(writer, _write(tmp_path / "v1", "purchase_thank_you", wait=True), "first") == 1
        await eventually(lambda: _seen(routes, 1), message="the consumer to see v1")
        running = samples.purchase(customer)
        await bridge.publish(running)
        running_id = f"journey:{JOURNEY}:{customer['id']}:{running['payload']['order_id']}"
        await eventually(lambda: bridge.metric("eventflow_workflow_starts_total", {"journey": JOURNEY}) == 1,
                         message="the published journey's first instance")

        await asyncio.to_thread(change, writer, JOURNEY, CatalogAction.PAUSE, author="tester")
        await eventually(lambda: _seen(routes, 1, JourneyState.PAUSED), message="the consumer to see the pause")
        blocked = samples.purchase(customer)
        await bridge.publish(blocked)
        # The running instance still gets the event it waits for, and finishes with its send.
        await bridge.publish(samples.event("OrderShipped", customer, {
            "order_id": running["payload"]["order_id"], "carrier": "DHL", "tracking_number": "T1",
            "estimated_delivery_at": None}))
        await eventually(lambda: _subjects(provider, running["payload"]["order_id"]),
                         message="the running instance's send after the pause")
        await asyncio.wait_for(temporal_client.get_workflow_handle(running_id).result(), 20)
        result = await temporal_client.get_workflow_handle(running_id).describe()
        await eventually(lambda: bridge.metric("eventflow_events_consumed_total",
                                               {"topic": topic, "event_type": "PurchaseCompleted",
                                                "outcome": "unrouted"}) == 2, message="the paused trigger unrouted")

    assert result.status is WorkflowExecutionStatus.COMPLETED
    assert bridge.metric("eventflow_workflow_starts_total", {"journey": JOURNEY}) == 1
    assert _subjects(provider, running["payload"]["order_id"]) == [
        f"Thank you for your order {running['payload']['order_id']}"]
    assert not _subjects(provider, before["payload"]["order_id"])
    assert not _subjects(provider, blocked["payload"]["order_id"])


async def test_rollback_restores_the_old_behaviour_for_new_instances_only(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        writer: CatalogWriter, provider: ProviderStub) -> None:
    customer = samples.customer(locale="en")
    first = await _publish(writer, _write(tmp_path / "a", "purchase_thank_you"), "thank you email")
    async with _running(kafka_config, temporal_client, topic, tmp_path, unique, writer, provider) as (
            bridge, routes, _):
        assert _seen(routes, first)
        on_v1 = samples.purchase(customer)
        await bridge.publish(on_v1)
        await eventually(lambda: _subjects(provider, on_v1["payload"]["order_id"]), message="v1's send")

        second = await _publish(writer, _write(tmp_path / "b", "review_request"), "review request instead")
        await eventually(lambda: _seen(routes, second), message="the consumer to see v2")
        on_v2 = samples.purchase(customer)
        await bridge.publish(on_v2)
        await eventually(lambda: _subjects(provider, on_v2["payload"]["order_id"]), message="v2's send")

        rolled = await asyncio.to_thread(change, writer, JOURNEY, CatalogAction.ROLLBACK, author="tester",
                                         rollback_to=first)
        assert rolled is not None and rolled.version == 3
        await eventually(lambda: _seen(routes, 3), message="the consumer to see the rollback")
        on_v3 = samples.purchase(customer)
        await bridge.publish(on_v3)
        await eventually(lambda: _subjects(provider, on_v3["payload"]["order_id"]), message="v3's send")

    assert _subjects(provider, on_v1["payload"]["order_id"]) == [f"Thank you for your order {on_v1['payload']['order_id']}"]
    assert _subjects(provider, on_v2["payload"]["order_id"]) == [f"How was your order {on_v2['payload']['order_id']}?"]
    assert _subjects(provider, on_v3["payload"]["order_id"]) == [f"Thank you for your order {on_v3['payload']['order_id']}"]
    versions = {}
    for order in (on_v1, on_v2, on_v3):
        workflow_id = f"journey:{JOURNEY}:{customer['id']}:{order['payload']['order_id']}"
        description = await temporal_client.get_workflow_handle(workflow_id).describe()
        versions[order["payload"]["order_id"]] = description.typed_search_attributes
    assert [v for v in (int(next(p.value for p in versions[o["payload"]["order_id"]]
                                 if p.key.name == "JourneyVersion")) for o in (on_v1, on_v2, on_v3))] == [1, 2, 3]
    catalog = await asyncio.to_thread(writer.read)
    history = catalog.history(JOURNEY)
    assert [(e.version, e.action, e.author) for e in history] == [
        (1, CatalogAction.PUBLISH, "tester"), (2, CatalogAction.PUBLISH, "tester"), (3, CatalogAction.ROLLBACK, "tester")]
    assert history[2].content_hash == history[0].content_hash != history[1].content_hash
    assert "-      template: purchase_thank_you" in diff(catalog, JOURNEY, 1, 2)
    assert diff(catalog, JOURNEY, 1, 3) == ""


async def test_a_consumer_started_after_several_publishes_routes_by_the_latest(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        writer: CatalogWriter, provider: ProviderStub) -> None:
    for index, template in enumerate(("purchase_thank_you", "review_request", "purchase_thank_you",
                                      "review_request")):
        await _publish(writer, _write(tmp_path / f"v{index}", template), f"publish {index}")
    await asyncio.to_thread(change, writer, JOURNEY, CatalogAction.PAUSE, author="tester")
    await asyncio.to_thread(change, writer, JOURNEY, CatalogAction.RESUME, author="tester")
    customer = samples.customer(locale="en")
    order = samples.purchase(customer)
    async with _running(kafka_config, temporal_client, topic, tmp_path, unique, writer, provider) as (
            bridge, routes, follower):
        assert routes.position() == {JOURNEY: (4, JourneyState.ACTIVE)}
        await bridge.publish(order)
        await eventually(lambda: _subjects(provider, order["payload"]["order_id"]), message="the latest's send")
        assert follower.metrics.registry.get_sample_value("eventflow_catalog_entries_total") == 6
    assert _subjects(provider, order["payload"]["order_id"]) == [f"How was your order {order['payload']['order_id']}?"]


async def test_an_invalid_publish_is_rejected_with_file_and_line_and_changes_nothing(
        tmp_path: Path, writer: CatalogWriter) -> None:
    await _publish(writer, _write(tmp_path / "good", "purchase_thank_you"), "good")
    before = await asyncio.to_thread(writer.read)
    bad = _write(tmp_path / "bad", "no_such_template")
    with pytest.raises(CatalogValidationError) as raised:
        await asyncio.to_thread(publish_path, writer, bad, author="tester")
    [problem] = raised.value.problems
    line = bad.read_text().splitlines().index("      template: no_such_template") + 1
    assert problem.file == str(bad) and problem.line == line and "unknown template 'no_such_template'" in problem.message
    after = await asyncio.to_thread(writer.read)
    assert after.history(JOURNEY) == before.history(JOURNEY)
    # Publishing unchanged content writes nothing either (a GitOps seed re-applied).
    [unchanged] = await asyncio.to_thread(publish_path, writer, tmp_path / "good", author="tester")
    assert unchanged.entry is None and unchanged.current_version == 1
    assert len((await asyncio.to_thread(writer.read)).history(JOURNEY)) == 1


async def test_a_malformed_record_is_skipped_and_counted_and_a_later_publish_still_routes(
        kafka_config: dict[str, str], tmp_path: Path, writer: CatalogWriter) -> None:
    routes, follower = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS, registry=CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    try:
        # Signed, so what is judged is the content (a trusted publisher's bug).
        for key, value in ((b"catalog_thanks/00000001/x", b"{not json"), (b"x", b'{"format": 99}')):
            _produce(kafka_config, writer.topic, key, value,
                     [(SIGNATURE_HEADER, sign_record(key, value, CATALOG_KEYS).encode())])
        await eventually(lambda: follower.metrics.registry.get_sample_value(
            "eventflow_catalog_invalid_entries_total", {"reason": "unsupported_version"}) == 1,
            message="the bad records counted")
        version = await _publish(writer, _write(tmp_path / "ok", "purchase_thank_you"), "after garbage")
        await eventually(lambda: _seen(routes, version), message="the publish after the bad records")
    finally:
        stop.set()
        await task
    registry = follower.metrics.registry
    assert registry.get_sample_value("eventflow_catalog_invalid_entries_total", {"reason": "json"}) == 1
    assert "PurchaseCompleted" in routes.event_types


async def test_a_missing_catalog_topic_is_a_one_line_startup_error(kafka_config: dict[str, str], unique: str) -> None:
    with pytest.raises(CatalogUnavailableError) as raised:
        await follow_catalog(kafka_config, f"test-catalog-missing-{unique}", keys=CATALOG_KEYS, registry=CollectorRegistry(),
                             timeout_seconds=5)
    assert "\n" not in str(raised.value) and "does not exist" in str(raised.value)


async def test_concurrent_publishes_each_get_their_own_version(tmp_path: Path, writer: CatalogWriter) -> None:
    paths = []
    for index in range(4):
        text = _SEND.format(template="purchase_thank_you", wait="").replace("id: thanks", f"id: thanks_{index}")
        paths.append(_write(tmp_path / f"w{index}", "purchase_thank_you", text=text))
    await asyncio.gather(*(asyncio.to_thread(publish_path, writer, path, author=f"w{index}")
                           for index, path in enumerate(paths)))
    history = (await asyncio.to_thread(writer.read)).history(JOURNEY)
    assert [e.version for e in history] == [1, 2, 3, 4]
    assert sorted(e.author for e in history) == ["w0", "w1", "w2", "w3"]
    assert len({e.content_hash for e in history}) == 4


def test_the_commands_publish_pause_and_show_history(kafka_config: dict[str, str], tmp_path: Path,
                                                     writer: CatalogWriter, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from eventflow.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_CATALOG_TOPIC", writer.topic)
    monkeypatch.setenv("EVENTFLOW_CATALOG_SIGNING_KEYS", CATALOG_KEYS_TEXT)
    monkeypatch.setenv("EVENTFLOW_EMAIL_PROVIDER", "sendgrid")  # publish refuses a channel no provider serves
    bad = _write(tmp_path / "bad", "no_such_template")
    assert main(["journeys", "publish", str(bad), "--author", "ana"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:12: " in err and "nothing published" in err
    good = _write(tmp_path / "good", "purchase_thank_you")
    assert main(["journeys", "publish", str(tmp_path / "good"), "--author", "ana", "-m", "first cut"]) == 0
    published = capsys.readouterr().out
    assert published.startswith(f"published {JOURNEY} v1 hash ")
    published_hash = published.split()[-1]
    # One content hash: what validate says of the folder is what publish and list say of the entry.
    assert main(["journeys", "validate", "--dir", str(tmp_path / "good")]) == 0
    assert capsys.readouterr().out.split()[-1] == published_hash
    assert main(["journeys", "pause", JOURNEY, "--author", "bo", "-m", "holiday freeze"]) == 0
    capsys.readouterr()
    assert main(["journeys", "list"]) == 0
    [listed] = capsys.readouterr().out.splitlines()
    assert listed.split()[:4] == [JOURNEY, "v1", "paused", published_hash]
    assert main(["journeys", "history", JOURNEY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "ana" in lines[0] and "first cut" in lines[0]
    assert "pause" in lines[1] and "bo" in lines[1] and "holiday freeze" in lines[1]
    good.write_text(good.read_text().replace("purchase_thank_you", "review_request"))
    monkeypatch.setenv("USER", "cy")
    assert main(["journeys", "publish", str(good)]) == 0
    assert main(["journeys", "diff", JOURNEY, "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "+      template: review_request" in out
    assert main(["journeys", "rollback", JOURNEY, "1"]) == 0
    assert f"{JOURNEY}: v3 active (rollback, rev 4)" in capsys.readouterr().out
    history = writer.read().history(JOURNEY)
    assert [e.author for e in history] == ["ana", "bo", "cy", "cy"]


async def test_a_consumer_whose_catalog_topic_is_missing_ends_start_up_with_one_line(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, unique: str) -> None:
    import sys

    from tests.harness import consumer_env

    env = consumer_env(kafka_config, temporal_client.service_client.config.target_host, topic, unique)
    env.update({"EVENTFLOW_CATALOG_SOURCE": "kafka", "EVENTFLOW_CATALOG_TOPIC": f"test-catalog-none-{unique}",
                "EVENTFLOW_CATALOG_SIGNING_KEYS": CATALOG_KEYS_TEXT})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow.cli", "consume", env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert process.returncode == 2, stderr.decode()
    assert lines[-1] == (f"eventflow: cannot read the journey catalog topic 'test-catalog-none-{unique}' at "
                         f"{kafka_config['bootstrap.servers']}: it does not exist (create it with "
                         "`eventflow journeys publish`)"), lines
    assert b"Traceback" not in stdout + stderr


async def test_a_worker_on_the_catalog_checks_the_published_journeys_channels_not_the_files(
        kafka_config: dict[str, str], temporal_client: Client, tmp_path: Path, writer: CatalogWriter,
        unique: str) -> None:
    from core.errors import ConfigError
    from eventflow.settings import load_worker
    from eventflow.worker import run_worker

    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
           "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
           "EVENTFLOW_TASK_QUEUE": f"test-journeys-{unique}", "EVENTFLOW_METRICS_PORT": "0",
           "EVENTFLOW_EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.test", "EVENTFLOW_EMAIL_FROM": "a@b.test"}
    # From files, the sample journeys also send SMS, which this worker would serve from the outbox.
    with pytest.raises(ConfigError) as raised:
        await run_worker(load_worker(env, dev_defaults=False), stop=asyncio.Event(), registry=CollectorRegistry())
    assert raised.value.variable == "EVENTFLOW_SMS_PROVIDER"
    # From the catalog, only its one email journey counts: the worker starts (and stops, as asked).
    await _publish(writer, _write(tmp_path / "email", "purchase_thank_you"), "email journey")
    stop = asyncio.Event()
    stop.set()
    process = load_worker({**env, "EVENTFLOW_CATALOG_SOURCE": "kafka", "EVENTFLOW_CATALOG_TOPIC": writer.topic,
                           "EVENTFLOW_CATALOG_SIGNING_KEYS": CATALOG_KEYS_TEXT},
                          dev_defaults=False)
    await asyncio.wait_for(run_worker(process, stop=stop, registry=(registry := CollectorRegistry())), 30)
    assert registry.get_sample_value("eventflow_catalog_journeys", {"state": "active"}) == 1


async def test_archive_with_exit_running_cancels_running_instances_and_starts_no_new_ones(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        writer: CatalogWriter, provider: ProviderStub) -> None:
    from consumer.catalog_admin import cancel_running

    customer = samples.customer(locale="en")
    journey = f"catalog_archive_{unique}"  # cancel_running looks across the namespace: a journey of its own
    text = _SEND.format(template="purchase_thank_you", wait=_WAIT).replace(f"id: {JOURNEY}", f"id: {journey}")
    await _publish(writer, _write(tmp_path / "w", "", text=text), "waits for shipping")
    async with _running(kafka_config, temporal_client, topic, tmp_path, unique, writer, provider) as (
            bridge, routes, _):
        running = samples.purchase(customer)
        await bridge.publish(running)
        await eventually(lambda: bridge.metric("eventflow_workflow_starts_total", {"journey": journey}) == 1,
                         message="the running instance")
        handle = temporal_client.get_workflow_handle(
            f"journey:{journey}:{customer['id']}:{running['payload']['order_id']}")
        await asyncio.to_thread(change, writer, journey, CatalogAction.ARCHIVE, author="tester")
        # Visibility is eventually consistent: the instance is listed as running shortly after its start.
        assert await eventually(lambda: cancel_running(temporal_client, journey), message="the instance cancelled") == 1
        await eventually(lambda: routes.position().get(journey) == (1, JourneyState.ARCHIVED), message="the consumer to see the archive")
        later = samples.purchase(customer)
        await bridge.publish(later)
        await eventually(lambda: bridge.metric("eventflow_events_consumed_total",
                                               {"topic": topic, "event_type": "PurchaseCompleted",
                                                "outcome": "unrouted"}) == 1, message="the archived trigger unrouted")
        description = await handle.describe()
        while description.status is WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.1)
            description = await handle.describe()
    assert description.status is WorkflowExecutionStatus.CANCELED
    assert bridge.metric("eventflow_workflow_starts_total", {"journey": journey}) == 1
    assert provider.sends() == []


# --- catalog trust: signed, validated entries (docs/architecture.md, "Catalog trust") -------------


def _forged(writer: CatalogWriter, **snapshot_changes: object) -> CatalogEntry:
    """The next entry of the test journey as a forger would make it: v1's snapshot changed, hashes made to match."""
    catalog = writer.read()
    latest = catalog.latest(JOURNEY)
    assert latest is not None
    version = latest.version + 1
    snapshot = with_version({**latest.snapshot, **snapshot_changes}, version)
    return replace(latest, revision=latest.revision + 1, version=version, snapshot=snapshot,
                   content_hash=content_hash(snapshot), author="mallory", entry_id=uuid.uuid4().hex)


def _record(kind: str, writer: CatalogWriter) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    """A record the follower must skip: key, value, headers, and the reason it is counted under."""
    entry = _forged(writer)
    key, value = encode_entry(entry)
    match kind:
        case "deep_nesting":
            value = b"[" * 100_000 + b"]" * 100_000
            reason = "depth"
        case "bad_trigger_filter":
            key, value = encode_entry(_forged(writer, trigger_filter="((("))
            reason = "validation"
        case "unsigned":
            return key, value, [], "signature"
        case "wrongly_signed":
            return key, value, [(SIGNATURE_HEADER, sign_record(key, value, FORGED_KEYS).encode())], "signature"
        case "too_new":
            value = json.dumps({**json.loads(value), "format": 2}).encode()
            reason = "unsupported_version"
        case _:
            raise AssertionError(kind)
    return key, value, [(SIGNATURE_HEADER, sign_record(key, value, CATALOG_KEYS).encode())], reason


def _produce(kafka_config: dict[str, str], topic: str, key: bytes, value: bytes,
             headers: list[tuple[str, bytes]]) -> None:
    producer = Producer(dict(kafka_config))
    sent: list[tuple[str, str | bytes | None]] = list(headers)
    producer.produce(topic, key=key, value=value, headers=sent, partition=0)
    assert producer.flush(10) == 0


@pytest.mark.parametrize("kind", ["deep_nesting", "bad_trigger_filter", "unsigned", "wrongly_signed", "too_new"])
async def test_an_untrusted_record_is_skipped_and_counted_the_last_good_version_serves_and_a_later_publish_applies(
        kafka_config: dict[str, str], tmp_path: Path, writer: CatalogWriter, kind: str) -> None:
    await _publish(writer, _write(tmp_path / "v1", "purchase_thank_you"), "good")
    routes, follower = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS, registry=CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    registry = follower.metrics.registry
    try:
        key, value, headers, reason = await asyncio.to_thread(_record, kind, writer)
        _produce(kafka_config, writer.topic, key, value, headers)
        await eventually(lambda: registry.get_sample_value("eventflow_catalog_invalid_entries_total",
                                                           {"reason": reason}) == 1, message=f"the {kind} record counted")
        # Skipped: v1 still routes, the follower runs, and readiness stays ready but names the skipped record.
        assert routes.position() == {JOURNEY: (1, JourneyState.ACTIVE)}
        assert not task.done() and follower.problem() is None
        ready, detail = follower.readiness()
        assert ready and JOURNEY in detail and reason in detail, detail
        assert registry.get_sample_value("eventflow_catalog_rejected_journeys") == 1
        # The next good publish takes the revision the skipped record claimed, and applies.
        version = await _publish(writer, _write(tmp_path / "v2", "review_request"), "good again")
        assert version == 2
        await eventually(lambda: _seen(routes, 2), message="the publish after the skipped record")
        assert follower.readiness() == (True, f"following at offset {follower._next_offset}")
        assert registry.get_sample_value("eventflow_catalog_rejected_journeys") == 0
    finally:
        stop.set()
        await task
    assert sum(registry.get_sample_value("eventflow_catalog_invalid_entries_total", {"reason": r.value}) or 0
               for r in RejectReason) == 1


async def test_a_consumer_keeps_serving_and_stays_ready_past_a_signed_entry_whose_trigger_filter_does_not_parse(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        writer: CatalogWriter, provider: ProviderStub) -> None:
    customer = samples.customer(locale="en")
    await _publish(writer, _write(tmp_path / "v1", "purchase_thank_you"), "thank you")
    async with _running(kafka_config, temporal_client, topic, tmp_path, unique, writer, provider) as (
            bridge, routes, follower):
        # Signed with the trusted key (a leaked publisher, or a bug): only validation stands in the way.
        key, value = encode_entry(await asyncio.to_thread(_forged, writer, trigger_filter="((("))
        _produce(kafka_config, writer.topic, key, value,
                 [(SIGNATURE_HEADER, sign_record(key, value, CATALOG_KEYS).encode())])
        await eventually(lambda: follower.metrics.registry.get_sample_value(
            "eventflow_catalog_invalid_entries_total", {"reason": "validation"}) == 1, message="the entry skipped")
        # On a loaded machine the first poll may come after the skip: readiness is judged once polling.
        await eventually(lambda: bridge.service.readiness()[1] != "not yet polling", message="the first poll")
        ready, detail = bridge.service.readiness()
        assert ready and f"{JOURNEY}: offset " in detail and "validation" in detail, detail
        order = samples.purchase(customer)
        await bridge.publish(order)
        await eventually(lambda: _subjects(provider, order["payload"]["order_id"]), message="v1's send")
        assert await _publish(writer, _write(tmp_path / "v2", "review_request"), "review request") == 2
        await eventually(lambda: _seen(routes, 2), message="the consumer to see v2")
        later = samples.purchase(customer)
        await bridge.publish(later)
        await eventually(lambda: _subjects(provider, later["payload"]["order_id"]), message="v2's send")
        assert bridge.service.readiness() == (True, "polling")
    assert _subjects(provider, order["payload"]["order_id"]) == [f"Thank you for your order {order['payload']['order_id']}"]
    assert _subjects(provider, later["payload"]["order_id"]) == [f"How was your order {later['payload']['order_id']}?"]


def test_pause_after_a_rejected_entry_pauses_the_last_good_version_and_says_so(
        kafka_config: dict[str, str], tmp_path: Path, writer: CatalogWriter, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from eventflow.cli import main

    [published] = publish_path(writer, _write(tmp_path / "v1", "purchase_thank_you"), author="ana")
    assert published.entry is not None
    key, value = encode_entry(_forged(writer, trigger_filter="((("))
    _produce(kafka_config, writer.topic, key, value, [(SIGNATURE_HEADER, sign_record(key, value, CATALOG_KEYS).encode())])
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_CATALOG_TOPIC", writer.topic)
    monkeypatch.setenv("EVENTFLOW_CATALOG_SIGNING_KEYS", CATALOG_KEYS_TEXT)
    capsys.readouterr()

    assert main(["journeys", "pause", JOURNEY, "--author", "bo"]) == 0
    out, err = capsys.readouterr()
    assert f"the newest record of {JOURNEY} was rejected (offset 1: validation: " in err
    assert "v1 (active) is what serves" in err
    assert f"{JOURNEY}: v1 paused (pause, rev 2)" in out
    paused = writer.read().latest(JOURNEY)
    assert paused is not None and paused.action is CatalogAction.PAUSE
    assert paused.snapshot == published.entry.snapshot and paused.snapshot["trigger_filter"] is None
    assert main(["journeys", "list"]) == 0
    [listed] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(JOURNEY)]  # no log lines
    assert listed.split()[:3] == [JOURNEY, "v1", "paused"] and "rejected" not in listed


async def test_a_follower_that_stops_before_it_is_asked_makes_readiness_not_ready(
        kafka_config: dict[str, str], tmp_path: Path, writer: CatalogWriter) -> None:
    class Broken(CatalogFollower):
        """Fails the way a bug would, after a clean load."""

        loaded = False

        async def _apply(self, records: list[SourceRecord]) -> tuple[bool, set[str]]:
            if self.loaded:
                raise RuntimeError("a bug")
            return await super()._apply(records)

    await _publish(writer, _write(tmp_path / "v1", "purchase_thank_you"), "good")
    follower = Broken(kafka_config, writer.topic, keys=CATALOG_KEYS)
    await follower.load()
    follower.loaded = True
    assert follower.readiness() == (True, "following at offset 1")
    # The follower hands records on when there are some: the next one meets the bug.
    _produce(kafka_config, writer.topic, b"journey/any", b"{}", [])
    with pytest.raises(RuntimeError):
        await follower.run(asyncio.Event())
    assert follower.readiness() == (False, "journey catalog follower stopped: RuntimeError: a bug")
