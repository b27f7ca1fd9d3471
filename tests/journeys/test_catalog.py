"""The catalog model without servers: the entry codec, malformed entries, and the revision guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.catalog import (
    Catalog,
    CatalogAction,
    CatalogConflictError,
    CatalogEntry,
    CatalogEntryError,
    CatalogError,
    JourneyState,
    SourceFile,
    decode_entry,
    definition_from_snapshot,
    encode_entry,
    next_entry,
    with_version,
)
from journeys.loader import load_all
from journeys.model import JourneyDefinition

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
