"""Segment files become a typed condition tree; what cannot be evaluated is refused with file and line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from events.schemas import load as load_schemas
from journeys._yaml import load_located
from journeys.event_schemas import catalogue
from journeys.loader import default_journeys_dir
from journeys.segments import (
    All,
    Attributes,
    Compare,
    Comparison,
    Consent,
    CountBound,
    EventCount,
    LastEvent,
    LastPayload,
    Not,
    ProfileField,
    SegmentError,
    ValueType,
    load_segments,
    parse_segment,
)

ATTRIBUTES = Attributes({"tier": ValueType.STRING, "lifetime_value": ValueType.NUMBER})


@pytest.fixture(scope="module")
def events():
    known, problems = catalogue(load_schemas().event_types, default_journeys_dir())
    assert not problems
    return known


def parse(text: str, events=None):
    return parse_segment("seg.yaml", load_located(text), ATTRIBUTES, events)


def test_the_shipped_segments_load(events) -> None:
    segments = {segment.id: segment for segment in load_segments()}
    assert set(segments) >= {"repeat_buyers", "lapsed_gold"}
    assert segments["lapsed_gold"].match == All((
        ProfileField("attributes.tier", Compare(Comparison.EQUALS, ("gold",))),
        LastEvent("PurchaseCompleted", timedelta(days=60), recent=False)))


def test_every_condition_kind_parses_to_its_type(events) -> None:
    segment, problems = parse("""
id: everything
version: 3
match:
  any:
    - {profile: attributes.lifetime_value, at_least: 100}
    - {profile: locale, in: [de, fr]}
    - {profile: attributes.tier, exists: false}
    - consent: {channel: sms}
    - {event: PurchaseCompleted, count: {at_most: 1}, within: 2w}
    - {event: CheckoutStarted, within: 12h}
    - event: PurchaseCompleted
      last: {field: payload.order_id, equals: o-1}
    - not: {consent: {channel: email, topic: product_news}}
""", events)
    assert problems == []
    assert segment is not None and segment.version == 3
    items = segment.match.items
    assert items[0] == ProfileField("attributes.lifetime_value", Compare(Comparison.AT_LEAST, (100.0,)))
    assert items[1] == ProfileField("locale", Compare(Comparison.IN, ("de", "fr")))
    assert items[2] == ProfileField("attributes.tier", False)
    assert items[3] == Consent("sms", "")
    assert items[4] == EventCount("PurchaseCompleted", CountBound.AT_MOST, 1, timedelta(weeks=2))
    assert items[5] == LastEvent("CheckoutStarted", timedelta(hours=12), recent=True)
    assert items[6] == LastPayload("PurchaseCompleted", "payload.order_id", Compare(Comparison.EQUALS, ("o-1",)))
    assert items[7] == Not(Consent("email", "product_news"))
    assert segment.event_types() == {"PurchaseCompleted", "CheckoutStarted"}
    assert segment.payload_paths() == {"PurchaseCompleted": {"payload.order_id"}}


@pytest.mark.parametrize(("text", "line", "says"), [
    ("id: s\nversion: 1\nmatch:\n  all:\n    - profile: attributes.colour\n      equals: red\n", 5, "unknown profile field"),
    ("id: s\nversion: 1\nmatch:\n  profile: email\n  equals: a@b.c\n", 4, "contact fields cannot be compared"),
    ("id: s\nversion: 1\nmatch:\n  profile: attributes.tier\n  greater_than: 3\n", 5, "compares numbers only"),
    ("id: s\nversion: 1\nmatch:\n  profile: attributes.lifetime_value\n  equals: lots\n", 5, "is not"),
    ("id: s\nversion: 1\nmatch:\n  event: NoSuchEvent\n  within: 1d\n", 4, "unknown event type"),
    ("id: s\nversion: 1\nmatch:\n  event: PurchaseCompleted\n  last: {field: payload.nope, equals: 1}\n", 5,
     "has no field"),
    ("id: s\nversion: 1\nmatch:\n  event: PurchaseCompleted\n  count: {at_least: 2}\n  within: soon\n", 6,
     "not a duration"),
    ("id: s\nversion: 1\nmatch:\n  all: []\n", 4, "non-empty list"),
    ("id: s\nversion: 1\nmatch:\n  consent: {channel: pigeon}\n", 4, "consent takes channel"),
    ("id: S-1\nversion: 1\nmatch: {consent: {channel: sms}}\n", 1, "id must be"),
    ("id: s\nversion: 1\nmatch: {profile: locale, equals: de, event: X}\n", 3, "exactly one of"),
])
def test_a_bad_condition_is_refused_with_its_line(text: str, line: int, says: str, events) -> None:
    segment, problems = parse(text, events)
    assert segment is None
    assert problems, "a problem must be reported"
    assert problems[0].line == line, problems
    assert says in problems[0].message, problems


def test_a_segment_cannot_grow_without_bound() -> None:
    many = "\n".join("    - consent: {channel: sms}" for _ in range(200))
    segment, problems = parse(f"id: s\nversion: 1\nmatch:\n  any:\n{many}\n")
    assert segment is None
    assert any("at most 64 conditions" in p.message for p in problems)


def test_load_segments_names_every_file_and_refuses_duplicates(tmp_path: Path) -> None:
    audiences = tmp_path / "audiences"
    audiences.mkdir()
    (audiences / "attributes.yaml").write_text("attributes:\n  tier: string\n  size: huge\n")
    (audiences / "a.yaml").write_text("id: a\nversion: 1\nmatch: {consent: {channel: sms}}\n")
    (audiences / "b.yaml").write_text("id: a\nversion: 2\nmatch: {consent: {channel: sms}}\n")
    (audiences / "c.yaml").write_text("id: c\nversion: 1\nmatch: [oops\n")
    with pytest.raises(SegmentError) as caught:
        load_segments(tmp_path)
    text = str(caught.value)
    assert "attributes.yaml:3" in text and "size" in text
    assert "b.yaml:1" in text and "also defined" in text
    assert "c.yaml" in text and "not valid YAML" in text


def test_a_consent_topic_is_judged_as_a_send_steps_topic(tmp_path: Path) -> None:
    # The topics decide what a consent condition means (their defaults), so one naming a topic nobody can
    # be asked for, or a channel the topic is never sent on, is a typo refused at its line.
    (tmp_path / "topics.yaml").write_text(
        "topics:\n  - name: product_news\n    title: {en: News}\n    channels: [email]\n    default: opted_out\n")
    audiences = tmp_path / "audiences"
    audiences.mkdir()
    (audiences / "ok.yaml").write_text("id: ok\nversion: 1\nmatch: {consent: {channel: email, topic: product_news}}\n")
    (audiences / "sms.yaml").write_text("id: sms\nversion: 1\nmatch:\n  consent: {channel: sms, topic: product_news}\n")
    (audiences / "typo.yaml").write_text("id: typo\nversion: 1\nmatch:\n  not:\n    consent: {channel: email, "
                                         "topic: product_newz}\n")
    with pytest.raises(SegmentError) as caught:
        load_segments(tmp_path)
    problems = {Path(p.file).name: p for p in caught.value.problems}
    assert set(problems) == {"sms.yaml", "typo.yaml"}
    assert problems["sms.yaml"].line == 4 and "is not sent on sms" in problems["sms.yaml"].message
    assert problems["typo.yaml"].line == 5 and "unknown topic 'product_newz'" in problems["typo.yaml"].message
