"""Segments as data: a typed predicate over a customer's profile, consent and events.

A segment file (``<journeys dir>/audiences/<id>.yaml``) names an id, a version and a ``match`` condition.
The file is parsed into the typed `Condition` tree first; every check then runs over that tree,
and the store compiles the same tree to SQL (`store.segments`). Each condition is one of:

* ``{profile: attributes.tier, equals: gold}``: a profile field (``locale``, ``timezone`` or an
  attribute declared in ``journeys/audiences/attributes.yaml`` with its type) compared with a
  literal of that type (``equals``, ``not_equals``, ``in``, ``greater_than``, ``less_than``,
  ``at_least``, ``at_most``) or tested with ``exists: true|false``. Contact fields are refused:
  they are encrypted at rest and an address is never a segment key.
* ``{consent: {channel: email, topic: product_news}}``: a send of that topic on that channel would
  not be skipped for consent, exactly as the send path decides: no channel-wide opt-out, and the
  customer's recorded choice for the topic, else the topic's ``default`` from ``topics.yaml`` (a
  transactional topic: the channel-wide opt-out alone). Without ``topic``: not opted out of the
  channel. The topic must be declared in ``topics.yaml`` and offered on the channel.
* ``{event: PurchaseCompleted, count: {at_least: 2}, within: 30d}``: how many such events in a window,
  at most as long as the consumer keeps events (``EVENTFLOW_CUSTOMER_EVENTS_RETENTION_DAYS``).
* ``{event: PurchaseCompleted, within: 7d}`` / ``{event: ..., not_within: 7d}``: time since the last one.
* ``{event: PurchaseCompleted, last: {field: payload.total, greater_than: 100}}``: a payload field of the last one.
* ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, assert_never

from activities.topics import TopicCatalog
from core.errors import EventflowError
from core.settings import ConsumerSettings
from core.vocabulary import CHANNELS
from events.schemas import load as load_schemas
from journeys._yaml import DocPath, LocatedDocument, YamlSyntaxError, load_located, read_document
from journeys.durations import check_duration
from journeys.event_schemas import EventCatalogue, catalogue
from journeys.loader import default_journeys_dir
from journeys.paths import lookup
from journeys.problems import Problem
from journeys.topics import load_topics, send_topic_problems

#: The folder of segment files and the attribute declarations, beside the journeys' ``definitions``.
AUDIENCES = "audiences"
ATTRIBUTES_FILE = "attributes.yaml"
_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ATTRIBUTE = re.compile(r"^attributes\.[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PAYLOAD = re.compile(r"^payload(\.[A-Za-z_][A-Za-z0-9_]{0,62}){1,8}$")
#: Profile fields a segment may compare (contact fields are encrypted and never segment keys).
_PLAIN_PROFILE_FIELDS = {"locale": "string", "timezone": "string"}
MAX_CONDITIONS = 64
_KINDS = frozenset({"all", "any", "not", "profile", "consent", "event"})
MAX_IN_VALUES = 256
#: How long the consumer keeps the events segments count (`count_window_limit`).
RETENTION_VARIABLE = "EVENTFLOW_CUSTOMER_EVENTS_RETENTION_DAYS"


class SegmentError(EventflowError):
    """A segment file or the attribute declarations cannot be used; ``problems`` name ``file:line``."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = tuple(problems)


class UnknownSegmentError(EventflowError):
    """A command named a segment that is not defined."""

    def __init__(self, segment_id: str, known: Sequence[str]) -> None:
        super().__init__(f"segment {segment_id!r} is not defined (defined: {', '.join(known) or 'none'})")
        self.segment_id = segment_id


class ValueType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"


class Comparison(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    GREATER_THAN = "greater_than"
    LESS_THAN = "less_than"
    AT_LEAST = "at_least"
    AT_MOST = "at_most"


ORDERING = frozenset({Comparison.GREATER_THAN, Comparison.LESS_THAN, Comparison.AT_LEAST, Comparison.AT_MOST})
Literal = str | float | bool


@dataclass(frozen=True)
class Compare:
    """A field compared with literals of its declared type (``in`` holds several)."""

    op: Comparison
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class ProfileField:
    path: str
    test: Compare | bool  # bool: ``exists``


@dataclass(frozen=True)
class Consent:
    channel: str
    topic: str


class CountBound(StrEnum):
    AT_LEAST = "at_least"
    AT_MOST = "at_most"


@dataclass(frozen=True)
class EventCount:
    event_type: str
    bound: CountBound
    count: int
    within: timedelta


@dataclass(frozen=True)
class LastEvent:
    """The last event of a type occurred within ``window`` (or, ``recent=False``, not within it)."""

    event_type: str
    window: timedelta
    recent: bool


@dataclass(frozen=True)
class LastPayload:
    event_type: str
    path: str
    compare: Compare


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = ProfileField | Consent | EventCount | LastEvent | LastPayload | All | AnyOf | Not


@dataclass(frozen=True)
class Segment:
    id: str
    version: int
    description: str
    match: Condition
    file: str = ""

    def event_types(self) -> frozenset[str]:
        return frozenset(event_type for event_type, _ in _event_refs(self.match))

    def count_windows(self) -> frozenset[timedelta]:
        """The windows the segment counts events in (how far back it reads more than the last event)."""
        return frozenset(_count_windows(self.match))

    def payload_paths(self) -> dict[str, frozenset[str]]:
        """Per event type, the payload paths the segment reads from the last event (what the store keeps)."""
        paths: dict[str, set[str]] = {}
        for event_type, path in _event_refs(self.match):
            if path:
                paths.setdefault(event_type, set()).add(path)
        return {event_type: frozenset(found) for event_type, found in paths.items()}


def _event_refs(condition: Condition) -> Iterator[tuple[str, str]]:
    match condition:
        case EventCount(event_type=event_type) | LastEvent(event_type=event_type):
            yield event_type, ""
        case LastPayload(event_type=event_type, path=path):
            yield event_type, path
        case All(items=items) | AnyOf(items=items):
            for item in items:
                yield from _event_refs(item)
        case Not(item=item):
            yield from _event_refs(item)
        case ProfileField() | Consent():
            return
        case _:
            assert_never(condition)


def _count_windows(condition: Condition) -> Iterator[timedelta]:
    match condition:
        case EventCount(within=within):
            yield within
        case All(items=items) | AnyOf(items=items):
            for item in items:
                yield from _count_windows(item)
        case Not(item=item):
            yield from _count_windows(item)
        case ProfileField() | Consent() | LastEvent() | LastPayload():
            return
        case _:
            assert_never(condition)


@dataclass(frozen=True)
class Attributes:
    """The declared profile attributes a segment may compare, with their types."""

    types: Mapping[str, ValueType] = field(default_factory=dict)

    def type_of(self, path: str) -> ValueType | None:
        if path in _PLAIN_PROFILE_FIELDS:
            return ValueType(_PLAIN_PROFILE_FIELDS[path])
        return self.types.get(path.removeprefix("attributes.")) if _ATTRIBUTE.match(path) else None


class _Parser:
    """Builds the typed tree from one located document, collecting problems with their lines."""

    def __init__(self, file: str, doc: LocatedDocument, attributes: Attributes, events: EventCatalogue | None,
                 topics: TopicCatalog | None = None, count_limit: timedelta | None = None) -> None:
        self._file = file
        self._doc = doc
        self._attributes = attributes
        self._events = events
        self._topics = topics
        self._count_limit = count_limit
        self._count = 0
        self.problems: list[Problem] = []

    def problem(self, path: DocPath, message: str) -> None:
        self.problems.append(Problem(self._file, self._doc.line_of(path) or 1, message))

    def segment(self) -> Segment | None:
        data = self._doc.data
        if not isinstance(data, dict):
            self.problem((), "a segment file is a mapping with id, version and match")
            return None
        unknown = sorted(set(data) - {"id", "version", "description", "match"})
        if unknown:
            self.problem((unknown[0],), f"unknown key {unknown[0]!r} (a segment has id, version, description, match)")
        segment_id = data.get("id")
        if not isinstance(segment_id, str) or not _ID.match(segment_id):
            self.problem(("id",), "id must be lower-case letters, digits and _ (at most 63), starting with a letter")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 1_000_000:
            self.problem(("version",), "version must be a whole number from 1")
        description = data.get("description", "")
        if not isinstance(description, str):
            self.problem(("description",), "description must be text")
        if "match" not in data:
            self.problem((), "a segment needs a match condition")
            return None
        condition = self.condition(data["match"], ("match",))
        if self.problems or condition is None:
            return None
        assert isinstance(segment_id, str) and isinstance(version, int) and isinstance(description, str)
        return Segment(segment_id, version, description, condition, self._file)

    def condition(self, node: Any, path: DocPath) -> Condition | None:
        self._count += 1
        if self._count > MAX_CONDITIONS:
            if self._count == MAX_CONDITIONS + 1:
                self.problem(path, f"a segment holds at most {MAX_CONDITIONS} conditions")
            return None
        if not isinstance(node, dict) or not node:
            self.problem(path, "a condition is a mapping: profile, consent, event, all, any or not")
            return None
        kinds = [key for key in node if key in _KINDS]
        if len(kinds) != 1:
            self.problem(path, "a condition names exactly one of profile, consent, event, all, any, not")
            return None
        match kinds[0]:
            case "all" | "any" as kind:
                return self._group(kind, node, path)
            case "not":
                self._only(node, path, {"not"})
                inner = self.condition(node["not"], (*path, "not"))
                return Not(inner) if inner is not None else None
            case "profile":
                return self._profile(node, path)
            case "consent":
                return self._consent(node, path)
            case "event":
                return self._event(node, path)
            case _:
                return None

    def _only(self, node: dict[str, Any], path: DocPath, allowed: set[str]) -> bool:
        extra = sorted(set(node) - allowed)
        if extra:
            self.problem((*path, extra[0]), f"unexpected key {extra[0]!r} here (allowed: {', '.join(sorted(allowed))})")
        return not extra

    def _group(self, kind: str, node: dict[str, Any], path: DocPath) -> Condition | None:
        self._only(node, path, {kind})
        items = node[kind]
        if not isinstance(items, list) or not items:
            self.problem((*path, kind), f"{kind} takes a non-empty list of conditions")
            return None
        parsed = [self.condition(item, (*path, kind, index)) for index, item in enumerate(items)]
        if any(item is None for item in parsed):
            return None
        conditions = tuple(item for item in parsed if item is not None)
        return All(conditions) if kind == "all" else AnyOf(conditions)

    def _compare(self, node: dict[str, Any], path: DocPath, expected: ValueType | None, what: str) -> Compare | None:
        ops = [key for key in node if key in Comparison.__members__.values()]
        if len(ops) != 1:
            self.problem(path, f"{what}: give exactly one of {', '.join(op.value for op in Comparison)}")
            return None
        op = Comparison(ops[0])
        raw = node[op.value]
        if op is Comparison.IN:
            if not isinstance(raw, list) or not raw or len(raw) > MAX_IN_VALUES:
                self.problem((*path, op.value), f"in takes a list of 1 to {MAX_IN_VALUES} values")
                return None
            values = tuple(raw)
        else:
            values = (raw,)
        if expected is None:
            return None
        if op in ORDERING and expected is not ValueType.NUMBER:
            self.problem((*path, op.value), f"{what} is a {expected.value}: {op.value} compares numbers only")
            return None
        for value in values:
            if _type_of(value) is not expected:
                self.problem((*path, op.value), f"{what} is a {expected.value}; {value!r} is not")
                return None
        return Compare(op, tuple(float(v) if expected is ValueType.NUMBER else v for v in values))

    def _profile(self, node: dict[str, Any], path: DocPath) -> Condition | None:
        name = node["profile"]
        expected = self._attributes.type_of(name) if isinstance(name, str) else None
        if expected is None:
            self.problem((*path, "profile"), f"unknown profile field {name!r}: use locale, timezone or an attribute "
                         f"declared in {ATTRIBUTES_FILE} as attributes.<name> (contact fields cannot be compared)")
            return None
        if "exists" in node:
            self._only(node, path, {"profile", "exists"})
            if not isinstance(node["exists"], bool):
                self.problem((*path, "exists"), "exists is true or false")
                return None
            return ProfileField(name, node["exists"])
        self._only(node, path, {"profile", *Comparison.__members__.values()})
        compare = self._compare(node, path, expected, name)
        return ProfileField(name, compare) if compare else None

    def _consent(self, node: dict[str, Any], path: DocPath) -> Condition | None:
        self._only(node, path, {"consent"})
        body = node["consent"]
        if not isinstance(body, dict) or body.get("channel") not in CHANNELS or set(body) - {"channel", "topic"}:
            self.problem((*path, "consent"), f"consent takes channel (one of {', '.join(CHANNELS)}) and an optional topic")
            return None
        topic = body.get("topic", "")
        if not isinstance(topic, str) or (topic and not _ID.match(topic)):
            self.problem((*path, "consent", "topic"), "topic must be lower-case letters, digits and _")
            return None
        if topic and self._topics is not None:
            # Judged as a send step's topic is: a consent nobody could be asked for is a typo.
            for problem in send_topic_problems(self._topics, topic, [str(body["channel"])]):
                self.problem((*path, "consent", "topic"), problem)
                return None
        return Consent(str(body["channel"]), topic)

    def _window(self, text: Any, path: DocPath) -> timedelta | None:
        try:
            window = check_duration(text) if isinstance(text, str) else None
        except ValueError as exc:
            self.problem(path, str(exc))
            return None
        if window is None or window <= timedelta(0):
            self.problem(path, "a window is a positive duration such as 7d or 12h")
            return None
        return window

    def _event(self, node: dict[str, Any], path: DocPath) -> Condition | None:
        event_type = node["event"]
        if not isinstance(event_type, str) or (self._events is not None and event_type not in self._events):
            self.problem((*path, "event"), f"unknown event type {event_type!r}")
            return None
        if "count" in node:
            self._only(node, path, {"event", "count", "within"})
            count = node["count"]
            bounds = [key for key in (count if isinstance(count, dict) else {}) if key in CountBound.__members__.values()]
            if len(bounds) != 1 or len(count) != 1 or not _whole(count[bounds[0]]):
                self.problem((*path, "count"), "count takes at_least or at_most with a whole number")
                return None
            window = self._window(node.get("within"), (*path, "within"))
            if window is not None and self._count_limit is not None and window > self._count_limit:
                # Older events are pruned (all but the newest of a type): the count would miss them.
                self.problem((*path, "within"), f"a count window of {node['within']} is longer than the "
                             f"{self._count_limit.days}d events are kept ({RETENTION_VARIABLE}): raise it "
                             "or count over a shorter window")
                return None
            return EventCount(event_type, CountBound(bounds[0]), int(count[bounds[0]]), window) if window else None
        if "last" in node:
            self._only(node, path, {"event", "last"})
            last = node["last"]
            field_path = last.get("field") if isinstance(last, dict) else None
            if not isinstance(field_path, str) or not _PAYLOAD.match(field_path):
                self.problem((*path, "last"), "last takes field: payload.<name> and one comparison")
                return None
            sample = self._events.sample(event_type) if self._events is not None else {}
            found = lookup(sample, field_path) if sample else None
            if sample and found is None:
                self.problem((*path, "last", "field"), f"{event_type} has no field {field_path}")
                return None
            expected = _type_of(found) if sample else None
            if sample and expected is None:
                self.problem((*path, "last", "field"), f"{field_path} of {event_type} is not a string, number or boolean")
                return None
            assert isinstance(last, dict)
            compare = self._compare({k: v for k, v in last.items() if k != "field"}, (*path, "last"),
                                    expected or _type_of(next((v for k, v in last.items() if k != "field"), None)),
                                    field_path)
            return LastPayload(event_type, field_path, compare) if compare else None
        if "within" in node or "not_within" in node:
            key = "within" if "within" in node else "not_within"
            self._only(node, path, {"event", key})
            window = self._window(node[key], (*path, key))
            return LastEvent(event_type, window, key == "within") if window else None
        self.problem(path, "an event condition takes count + within, within, not_within, or last")
        return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000


def _type_of(value: Any) -> ValueType | None:
    match value:
        case bool():
            return ValueType.BOOLEAN
        case int() | float():
            return ValueType.NUMBER
        case str():
            return ValueType.STRING
        case _:
            return None


def parse_segment(file: str, doc: LocatedDocument, attributes: Attributes, events: EventCatalogue | None,
                  topics: TopicCatalog | None = None, *,
                  count_limit: timedelta | None = None) -> tuple[Segment | None, list[Problem]]:
    """The typed segment of one document, or the problems that keep it from being one.

    ``events`` and ``topics`` (None: not checked) are what event types and consent topics may be named;
    ``count_limit`` the widest window an event count may read (None: not checked).
    """
    parser = _Parser(file, doc, attributes, events, topics, count_limit)
    segment = parser.segment()
    return segment, parser.problems


def load_attributes(directory: Path) -> tuple[Attributes, list[Problem]]:
    """``attributes.yaml``: ``attributes: {name: string|number|boolean}``; absent means none declared."""
    path = directory / ATTRIBUTES_FILE
    if not path.exists():
        return Attributes(), []
    try:
        doc = read_document(path)
    except YamlSyntaxError as exc:
        return Attributes(), [Problem(str(path), exc.line or 1, exc.problem)]
    return _attributes_of(str(path), doc)


def parse_attributes(file: str, text: str) -> tuple[Attributes, list[Problem]]:
    """The attribute declarations in ``text`` (the contents of ``file``, as published), and their problems."""
    try:
        doc = load_located(text)
    except YamlSyntaxError as exc:
        return Attributes(), [Problem(file, exc.line or 1, exc.problem)]
    return _attributes_of(file, doc)


def _attributes_of(file: str, doc: LocatedDocument) -> tuple[Attributes, list[Problem]]:
    body = doc.data.get("attributes") if isinstance(doc.data, dict) else None
    if not isinstance(body, dict):
        return Attributes(), [Problem(file, 1, "expected attributes: {name: string|number|boolean}")]
    types: dict[str, ValueType] = {}
    problems: list[Problem] = []
    for name, kind in body.items():
        if not isinstance(name, str) or not _ATTRIBUTE.match(f"attributes.{name}") or kind not in ValueType.__members__.values():
            problems.append(Problem(file, doc.line_of(("attributes", name)) or 1,
                                    f"attribute {name!r}: a name and one of string, number, boolean"))
            continue
        types[name] = ValueType(kind)
    return Attributes(types), problems


def load_segments(root: Path | None = None) -> list[Segment]:
    """Every segment under ``root/audiences`` (``root``: the journeys folder, ``$EVENTFLOW_JOURNEYS_DIR``).

    Raises `SegmentError` listing each problem with ``file:line``.
    """
    segments, problems = check_segments(root)
    if problems:
        raise SegmentError(problems)
    return segments


def count_window_limit() -> timedelta:
    """The widest window a segment may count events in: as long as the consumer keeps them
    (`RETENTION_VARIABLE`, read from the environment of the command that validates)."""
    return timedelta(days=ConsumerSettings.load().customer_events_retention_days)


def check_segments(root: Path | None = None) -> tuple[list[Segment], list[Problem]]:
    """The good segments under ``root/audiences`` and every problem found (for ``journeys validate``).

    An event count over a window longer than `count_window_limit` is a problem (its older events are pruned).
    """
    root = root or default_journeys_dir()
    directory = root / AUDIENCES
    if not directory.is_dir():
        return [], []
    events, source_problems = catalogue(load_schemas().event_types, root)
    attributes, problems = load_attributes(directory)
    problems.extend(source_problems)
    # A broken topics file is the journeys' problem (reported there): then topics go unchecked here.
    declared, topic_problems = load_topics(root)
    topics = None if topic_problems else declared
    limit = count_window_limit()
    segments: list[Segment] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == ATTRIBUTES_FILE:
            continue
        try:
            doc = read_document(path)
        except YamlSyntaxError as exc:
            problems.append(Problem(str(path), exc.line or 1, exc.problem))
            continue
        segment, found = parse_segment(str(path), doc, attributes, events, topics, count_limit=limit)
        problems.extend(found)
        if segment is None:
            continue
        if segment.id in seen:
            problems.append(Problem(str(path), doc.line_of(("id",)) or 1,
                                    f"segment {segment.id!r} is also defined in {seen[segment.id]}"))
            continue
        seen[segment.id] = str(path)
        segments.append(segment)
    return segments, problems
