"""Segment entries without servers: the codec, what a reader refuses, versions, and older readers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys._yaml import load_located
from journeys.catalog import (
    Catalog,
    CatalogEntryError,
    EntryKind,
    Rejection,
    RejectReason,
    SourceFile,
    journey_of_key,
    kind_of_key,
    read_record,
    sign_record,
)
from journeys.segment_catalog import (
    SegmentCatalog,
    SegmentConflictError,
    SegmentEntry,
    decode_segment_entry,
    encode_segment_entry,
    next_segment_entry,
    read_segment_record,
    segment_of_key,
)
from journeys.segments import Segment, parse_attributes, parse_segment
from tests.catalog_keys import CATALOG_KEYS, FORGED_KEYS

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ATTRIBUTES = SourceFile("audiences/attributes.yaml", "attributes:\n  tier: string\n")
GOLD = "id: gold_buyers\nversion: 7\ndescription: gold, bought lately\nmatch:\n  all:\n" \
       "    - {profile: attributes.tier, equals: gold}\n" \
       "    - {event: PurchaseCompleted, count: {at_least: 1}, within: 30d}\n"


def _parsed(text: str) -> Segment:
    attributes, problems = parse_attributes(ATTRIBUTES.name, ATTRIBUTES.text)
    segment, problems = parse_segment("audiences/gold_buyers.yaml", load_located(text), attributes, None)
    assert segment is not None, problems
    return segment


def _publish(catalog: SegmentCatalog, text: str = GOLD) -> SegmentEntry | None:
    return next_segment_entry(catalog, _parsed(text), definition=SourceFile("audiences/gold_buyers.yaml", text),
                              attributes=ATTRIBUTES, author="ana", at=AT, summary="s")


def _value(entry: SegmentEntry, **changes: object) -> bytes:
    raw = json.loads(encode_segment_entry(entry)[1])
    raw.update(changes)
    return json.dumps(raw, sort_keys=True).encode()


def test_an_entry_survives_the_codec_and_versions_follow_content_not_the_file() -> None:
    catalog = SegmentCatalog()
    first = _publish(catalog)
    assert first is not None and first.key.startswith(b"segment:gold_buyers/00000001/")
    decoded = decode_segment_entry(*encode_segment_entry(first))
    assert decoded == first
    assert (decoded.segment.version, decoded.segment.file) == (1, "catalog:gold_buyers@v1")  # the file said 7
    catalog.apply(decoded)
    assert _publish(catalog, GOLD.replace("version: 7", "version: 8")) is None, "only the file's version changed"
    second = _publish(catalog, GOLD.replace("at_least: 1", "at_least: 2"))
    assert second is not None and (second.revision, second.version) == (2, 2)
    catalog.apply(decode_segment_entry(*encode_segment_entry(second)))
    assert catalog.position() == {"gold_buyers": 2}
    assert [s.version for s in catalog.segments()] == [2]
    with pytest.raises(SegmentConflictError):
        catalog.apply(second)  # a writer that lost the race for revision 2


@pytest.mark.parametrize(("change", "reason"), [
    ({"definition": {"name": "audiences/gold_buyers.yaml", "text": GOLD.replace("at_least: 1", "at_least: 5")}},
     RejectReason.SNAPSHOT),  # the condition altered after the hash was taken
    ({"definition": {"name": "audiences/gold_buyers.yaml", "text": GOLD.replace("tier", "vip")}},
     RejectReason.VALIDATION),  # an attribute nobody declared
    ({"definition": {"name": "audiences/gold_buyers.yaml", "text": "id: [unclosed\n"}}, RejectReason.VALIDATION),
    ({"attributes": {"name": "audiences/attributes.yaml", "text": "attributes:\n  tier: number\n"}},
     RejectReason.VALIDATION),  # "gold" is not a number
    ({"definition": {"name": "x", "text": GOLD.replace("id: gold_buyers", "id: other")}}, RejectReason.SNAPSHOT),
    ({"expires": "never"}, RejectReason.UNSUPPORTED_VERSION),
    ({"format": 2}, RejectReason.UNSUPPORTED_VERSION),
    ({"action": "archive"}, RejectReason.UNSUPPORTED_VERSION),
    ({"revision": 0}, RejectReason.FIELD),
    ({"kind": "journey"}, RejectReason.FIELD),
])
def test_a_reader_refuses_an_entry_that_does_not_check(change: dict[str, object], reason: RejectReason) -> None:
    entry = _publish(SegmentCatalog())
    assert entry is not None
    with pytest.raises(CatalogEntryError) as raised:
        decode_segment_entry(entry.key, _value(entry, **change))
    assert raised.value.reason is reason


def test_only_a_signed_record_under_its_own_key_is_read() -> None:
    entry = _publish(SegmentCatalog())
    assert entry is not None
    key, value = encode_segment_entry(entry)
    assert read_segment_record(key, value, sign_record(key, value, CATALOG_KEYS).encode(), keys=CATALOG_KEYS) == entry
    for signature in (None, sign_record(key, value, FORGED_KEYS).encode()):
        with pytest.raises(CatalogEntryError) as raised:
            read_segment_record(key, value, signature, keys=CATALOG_KEYS)
        assert raised.value.reason is RejectReason.SIGNATURE
    with pytest.raises(CatalogEntryError) as raised:
        decode_segment_entry(b"segment:gold_buyers/00000002/x", value)
    assert raised.value.reason is RejectReason.KEY


def test_a_release_without_segment_entries_skips_them_noted_against_no_journey() -> None:
    """What a reader that predates segments does: its journey path, unchanged, meets a segment record."""
    entry = _publish(SegmentCatalog())
    assert entry is not None
    key, value = encode_segment_entry(entry)
    with pytest.raises(CatalogEntryError) as raised:
        read_record(key, value, sign_record(key, value, CATALOG_KEYS).encode(), keys=CATALOG_KEYS)
    assert raised.value.reason is RejectReason.UNSUPPORTED_VERSION
    catalog = Catalog()  # the older fold notes the skip against the journey its key names: none
    catalog.reject(Rejection(journey_of_key(key), 0, raised.value.reason, raised.value.problem))
    assert catalog.rejections() == {}
    assert (kind_of_key(key), segment_of_key(key)) == (EntryKind.SEGMENT, "gold_buyers")
    assert kind_of_key(b"post_purchase/00000001/x") is EntryKind.JOURNEY
    assert kind_of_key(b"topic:news/00000001/x") is None, "a newer release's kind"


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=300) | st.sampled_from([GOLD]).map(lambda t: t.replace("gold", "[")),
       attributes=st.none() | st.text(max_size=80))
def test_any_published_text_is_read_or_refused_with_the_typed_error(text: str, attributes: str | None) -> None:
    entry = _publish(SegmentCatalog())
    assert entry is not None
    value = _value(entry, definition={"name": "a.yaml", "text": text},
                   attributes=None if attributes is None else {"name": "b.yaml", "text": attributes})
    try:
        decode_segment_entry(entry.key, value)
    except CatalogEntryError:
        pass
