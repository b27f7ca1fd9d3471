"""The catalog model without servers: the entry codec, malformed entries, and the revision guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.signing import SigningKeys
from journeys.catalog import (
    MAX_ENTRY_BYTES,
    MAX_STEPS,
    Catalog,
    CatalogAction,
    CatalogConflictError,
    CatalogEntry,
    CatalogEntryError,
    CatalogError,
    JourneyState,
    RejectReason,
    SourceFile,
    content_hash,
    decode_entry,
    definition_from_snapshot,
    encode_entry,
    next_entry,
    read_record,
    sign_record,
    with_version,
)
from journeys.loader import check_snapshot, load_all
from journeys.model import SNAPSHOT_FORMAT, JourneyDefinition
from tests.catalog_keys import CATALOG_KEYS, FORGED_KEYS

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SOURCE = SourceFile("definitions/post_purchase.yaml", "id: post_purchase\n")


@cache
def _samples() -> tuple[JourneyDefinition, ...]:
    return load_all()


def _definition(threshold: int = 0) -> JourneyDefinition:
    base = next(d for d in _samples() if d.id == "post_purchase")
    return replace(base, trigger_filter=f"payload.total.amount > {threshold}") if threshold else base


def _publish(catalog: Catalog, definition: JourneyDefinition, author: str = "ana") -> CatalogEntry:
    entry = next_entry(catalog, journey_id=definition.id, action=CatalogAction.PUBLISH, author=author, at=AT,
                       summary="s", definition=definition, definition_source=SOURCE)
    assert entry is not None
    return entry


def test_every_sample_journey_survives_the_codec() -> None:
    catalog = Catalog()
    for definition in _samples():
        entry = _publish(catalog, definition)
        decoded = decode_entry(*encode_entry(entry))
        assert decoded == entry
        rebuilt = decoded.journey()
        assert (rebuilt.trigger_event, rebuilt.trigger_filter, rebuilt.entry_rule, rebuilt.key_path,
                rebuilt.listeners, rebuilt.exit_events, rebuilt.steps) == (
            definition.trigger_event, definition.trigger_filter, definition.entry_rule, definition.key_path,
            definition.listeners, definition.exit_events, definition.steps)
        # The routing model covers every field the snapshot has today (the model's own snapshot agrees).
        assert JourneyDefinition.snapshot(rebuilt) == entry.snapshot
        catalog.apply(decoded)
    assert {d.id for d in catalog.definitions(JourneyState.ACTIVE)} == {d.id for d in _samples()}


def test_snapshot_fields_this_release_does_not_model_reach_the_instance_unchanged() -> None:
    snapshot = with_version({**_definition().snapshot(), "added_by_a_newer_release": {"x": 1}}, 7)
    journey = definition_from_snapshot(snapshot)
    assert journey.snapshot() == snapshot and journey.snapshot()["added_by_a_newer_release"] == {"x": 1}
    assert journey.version == 7 and journey.trigger_event == "PurchaseCompleted"


@pytest.mark.parametrize(("alter", "reason"), [
    (lambda key, value: (key, b"\xff not json"), "json"),
    (lambda key, value: (key, None), "json"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "format": 2}).encode()), "unsupported_version"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "format": "1"}).encode()), "format"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "added_later": 1}).encode()), "unsupported_version"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "revision": 0}).encode()), "field"),
    (lambda key, value: (b"other/00000001/x", value), "key"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "snapshot": {
        **json.loads(value)["snapshot"], "trigger_filter": "payload.total.amount > 1"}}).encode()), "snapshot"),
    (lambda key, value: (key, json.dumps({**json.loads(value), "content_hash": "0" * 16}).encode()), "snapshot"),
])
def test_a_malformed_entry_is_a_typed_error_with_a_bounded_reason(
        alter: Callable[[bytes, bytes], tuple[bytes, bytes | None]], reason: str) -> None:
    key, value = encode_entry(_publish(Catalog(), _definition()))
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(*alter(key, value))
    assert raised.value.reason == reason


def test_lifecycle_keeps_the_version_and_rollback_publishes_the_old_content_as_a_new_one() -> None:
    catalog = Catalog()
    catalog.apply(_publish(catalog, _definition()))
    catalog.apply(_publish(catalog, _definition(5)))
    for action in (CatalogAction.PAUSE, CatalogAction.RESUME):
        entry = next_entry(catalog, journey_id="post_purchase", action=action, author="bo", at=AT, summary=action)
        assert entry is not None
        catalog.apply(entry)
    assert next_entry(catalog, journey_id="post_purchase", action=CatalogAction.RESUME, author="bo", at=AT,
                      summary="") is None
    rollback = next_entry(catalog, journey_id="post_purchase", action=CatalogAction.ROLLBACK, author="bo", at=AT,
                          summary="back", rollback_to=1)
    assert rollback is not None
    catalog.apply(rollback)
    history = catalog.history("post_purchase")
    assert [(e.revision, e.version, e.state) for e in history] == [
        (1, 1, JourneyState.ACTIVE), (2, 2, JourneyState.ACTIVE), (3, 2, JourneyState.PAUSED),
        (4, 2, JourneyState.ACTIVE), (5, 3, JourneyState.ACTIVE)]
    assert history[4].content_hash == history[0].content_hash
    assert history[4].snapshot["version"] == 3
    with pytest.raises(CatalogError, match="no version 9"):
        next_entry(catalog, journey_id="post_purchase", action=CatalogAction.ROLLBACK, author="bo", at=AT,
                   summary="", rollback_to=9)


def test_an_entry_that_is_not_the_next_revision_is_refused() -> None:
    catalog = Catalog()
    first = _publish(catalog, _definition())
    rival = _publish(catalog, _definition(3))  # made on the same (empty) view: the same revision
    catalog.apply(first)
    with pytest.raises(CatalogConflictError):
        catalog.apply(rival)
    assert catalog.history("post_purchase") == (first,)


@settings(max_examples=60, deadline=None)
@given(writers=st.integers(2, 5), schedule=st.lists(st.integers(0, 4), min_size=1, max_size=60))
def test_racing_writers_that_retry_lose_no_version(writers: int, schedule: list[int]) -> None:
    """Writers read a view, write on it, and retry on the log's end until the log's fold accepted their entry."""
    log: list[CatalogEntry] = []
    views: dict[int, Catalog] = {}
    done: dict[int, CatalogEntry] = {}

    def fold() -> Catalog:
        catalog = Catalog()
        for entry in log:
            try:
                catalog.apply(entry)
            except CatalogConflictError:
                continue
        return catalog

    def step(writer: int) -> None:
        if writer in done:
            return
        if writer not in views:
            views[writer] = fold()  # read to the end
            return
        entry = _publish(views.pop(writer), _definition(writer + 1), author=f"w{writer}")
        log.append(entry)
        if any(e.entry_id == entry.entry_id for e in fold().history("post_purchase")):
            done[writer] = entry

    for writer in schedule:
        step(writer % writers)
    while len(done) < writers:  # the rest of the run, round robin
        for writer in range(writers):
            step(writer)
    history = fold().history("post_purchase")
    assert [e.version for e in history] == list(range(1, writers + 1))
    assert sorted(e.author for e in history) == sorted(f"w{w}" for w in range(writers))


# --- trust: bounded input, full validation, signatures (docs/architecture.md, "Catalog trust") ---------


def _rehashed(entry: CatalogEntry, **snapshot_changes: object) -> CatalogEntry:
    """``entry`` with its snapshot changed and every hash made to match: only validation can catch it."""
    snapshot = with_version({**entry.snapshot, **snapshot_changes}, entry.version)
    return replace(entry, snapshot=snapshot, content_hash=content_hash(snapshot))


def test_deep_nesting_is_a_typed_error_not_a_recursion_error() -> None:
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(b"k", b"[" * 100000 + b"]" * 100000)
    assert raised.value.reason is RejectReason.DEPTH
    # Brackets inside strings are text, not nesting.
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(b"k", json.dumps({"format": 1, "summary": "[" * 1000}).encode())
    assert raised.value.reason is RejectReason.FIELD


def test_a_record_above_the_size_limit_is_skipped_unread() -> None:
    with pytest.raises(CatalogEntryError) as raised:
        read_record(b"k", b" " * (MAX_ENTRY_BYTES + 1), None, keys=None)
    assert raised.value.reason is RejectReason.SIZE


@pytest.mark.parametrize(("changes", "needle"), [
    ({"trigger_filter": "((("}, "expression '((('"),
    ({"trigger_filter": "payload.no_such_field > 1"}, "has no field 'no_such_field'"),
    ({"steps": [{"id": "x", "send": {"channel": "pigeon", "template": "purchase_thank_you"}}]}, "pigeon"),
    ({"steps": [{"id": "x", "delay": {"duration": "soon"}}]}, "soon"),
    ({"steps": "not a list"}, "does not decode"),
    ({"steps": [{"id": f"s{i}", "delay": {"duration": "1h"}} for i in range(MAX_STEPS + 1)]}, "more than 100 steps"),
    ({"templates": {}}, "unknown template"),
    ({"listeners": [{"event_type": "OrderShipped", "key_path": "payload.order_id", "when": None}]}, "listeners"),
])
def test_a_snapshot_that_fails_the_checks_of_validate_is_rejected_even_with_matching_hashes(
        changes: dict[str, object], needle: str) -> None:
    entry = _rehashed(_publish(Catalog(), _definition()), **changes)
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(*encode_entry(entry))
    assert raised.value.reason in (RejectReason.VALIDATION, RejectReason.SNAPSHOT)
    assert needle in raised.value.problem, raised.value.problem


def test_a_template_that_does_not_compile_or_render_is_rejected() -> None:
    entry = _publish(Catalog(), _definition())
    templates = json.loads(json.dumps(entry.snapshot["templates"]))
    template = templates["purchase_thank_you"]
    template["variants"]["email"]["en"]["body"] = "{% if %}"
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(*encode_entry(_rehashed(entry, templates=templates)))
    assert raised.value.reason is RejectReason.VALIDATION and "does not compile" in raised.value.problem
    template["variants"]["email"]["en"]["body"] = "{{ no_such_variable }}"
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(*encode_entry(_rehashed(entry, templates=templates)))
    assert "unknown variables ['no_such_variable']" in raised.value.problem


def test_a_measured_journey_with_a_goal_holdout_control_arm_and_fallback_passes_the_snapshot_checks(
        tmp_path: Path) -> None:
    from tests.journeys.test_goal_validation import MEASURED
    from tests.workflows.journey_harness import compile_journey

    snapshot = compile_journey(tmp_path, MEASURED)
    assert check_snapshot(snapshot, definition_from_snapshot(snapshot)) == []


def test_a_snapshot_of_a_newer_format_is_an_unsupported_version() -> None:
    entry = _rehashed(_publish(Catalog(), _definition()), format=SNAPSHOT_FORMAT + 1)
    with pytest.raises(CatalogEntryError) as raised:
        decode_entry(*encode_entry(entry))
    assert raised.value.reason is RejectReason.UNSUPPORTED_VERSION


def test_only_a_record_signed_with_a_configured_key_is_read() -> None:
    key, value = encode_entry(_publish(Catalog(), _definition()))
    signature = sign_record(key, value, CATALOG_KEYS).encode()
    assert read_record(key, value, signature, keys=CATALOG_KEYS).key == key
    assert read_record(key, value, None, keys=None).key == key  # development: unsigned accepted
    rotated = SigningKeys({**CATALOG_KEYS.keys, "test-2": bytes(32)}, "test-2")
    assert read_record(key, value, signature, keys=rotated).key == key  # an old key still verifies
    refused = {
        "unsigned": (key, value, None),
        "wrong key": (key, value, sign_record(key, value, FORGED_KEYS).encode()),
        "unknown key id": (key, value, sign_record(key, value, SigningKeys({"other": bytes(32)}, "other")).encode()),
        "value altered": (key, value.replace(b'"ana"', b'"eve"'), signature),
        "key altered": (b"post_purchase/00000009/x", value, signature),
        "not a signature": (key, value, b"\xff\xfe"),
    }
    for name, (k, v, s) in refused.items():
        with pytest.raises(CatalogEntryError) as raised:
            read_record(k, v, s, keys=CATALOG_KEYS)
        assert raised.value.reason is RejectReason.SIGNATURE, name


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(value=st.binary(max_size=400) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_never_raise_anything_but_the_typed_error(value: bytes) -> None:
    for keys in (None, CATALOG_KEYS):
        try:
            read_record(b"post_purchase/00000001/x", value, b"hmac-sha256:test-1:00", keys=keys)
        except CatalogEntryError:
            pass


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@settings(max_examples=120, deadline=None)
@given(data=st.data(), replacement=_JSON)
def test_a_valid_entry_with_any_part_replaced_never_raises_anything_but_the_typed_error(
        data: st.DataObject, replacement: object) -> None:
    """Every field and snapshot part of a real entry swapped for arbitrary JSON, hashes made to match."""
    key, value = encode_entry(_publish(Catalog(), _definition()))
    document = json.loads(value)
    path = data.draw(st.sampled_from(_paths(document)[1:]))
    parent: Any = document
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = replacement
    if isinstance(document.get("snapshot"), dict) and path[0] == "snapshot":
        version = document["snapshot"].get("version")
        document["snapshot"] = with_version(document["snapshot"], version)
        document["content_hash"] = content_hash(document["snapshot"])
    try:
        decode_entry(key, json.dumps(document).encode())
    except CatalogEntryError:
        pass


def test_journeys_on_a_source_event_type_pass_the_snapshot_checks_without_the_source_file(tmp_path: Path) -> None:
    """A follower has no ``sources.yaml``: custom event types are taken as the publisher checked them."""
    from journeys.loader import validate_folder
    from tests.events.shop import shop_journeys

    report = validate_folder(shop_journeys(tmp_path, "shop-events"))
    assert report.problems == () and {d.id for d in report.definitions} == {"big_order", "shipped"}
    for definition in report.definitions:
        snapshot = definition.snapshot()
        assert check_snapshot(snapshot, definition_from_snapshot(snapshot)) == []
    broken = with_version({**report.definitions[0].snapshot(), "trigger_filter": "((("}, 1)
    assert check_snapshot(broken, definition_from_snapshot(broken))  # still parsed
