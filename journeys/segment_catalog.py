"""Segments on the catalog topic: their entries, the entry codec, and the state they add up to.

Segment entries share the journey catalog's topic, signing and bounds (`journeys.catalog`) but
are their own kind: the key is ``segment:<id>/<revision:08d>/<entry id>`` and the value names
``kind: segment``. A release that predates segment entries reads them as journey entries with
fields it does not know and skips them as ``unsupported_version``, noted against no journey (a
journey id has no ``:``), so publishing segments never changes what an older reader routes.

An entry carries the segment file and the attribute declarations it was parsed with, as
published; a reader parses them again with the same parser as ``journeys validate`` and accepts
the entry only if the typed segment hashes to the entry's ``content_hash``. Per segment, entries
carry a ``revision`` and a ``version`` (bumped by every publish that changes the content; the
file's own ``version:`` is ignored in the catalog, as for journeys), and `SegmentCatalog.apply`
accepts an entry only as the exact next revision, so of two racing writers the first in the log
wins. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, assert_never

from core.errors import EventflowError
from core.signing import SigningKeys
from journeys._yaml import YamlSyntaxError, load_located
from journeys.catalog import (
    CatalogAction,
    CatalogEntryError,
    EntryKind,
    Rejection,
    RejectReason,
    SourceFile,
    check_format,
    entry_object,
    verify_record,
)
from journeys.segments import (
    All,
    AnyOf,
    Attributes,
    Compare,
    Condition,
    Consent,
    EventCount,
    LastEvent,
    LastPayload,
    Not,
    ProfileField,
    Segment,
    parse_attributes,
    parse_segment,
)

#: The prefix of a segment record's key (`journeys.catalog.kind_of_key`).
SEGMENT_KEY_PREFIX = f"{EntryKind.SEGMENT.value}:"
#: Every field of a format-1 segment entry; another is a newer release's (``unsupported_version``).
SEGMENT_ENTRY_FIELDS = frozenset({"format", "kind", "segment_id", "revision", "version", "action", "author",
                                  "published_at", "summary", "content_hash", "entry_id", "definition", "attributes"})
_SEGMENT_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: What segment entries do in this release; a newer release's action is ``unsupported_version``.
SEGMENT_ACTIONS = frozenset({CatalogAction.PUBLISH})


class SegmentConflictError(EventflowError):
    """An entry is not the next revision of its segment (a writer lost a race, or a gap)."""

    def __init__(self, segment_id: str, revision: int, expected: int) -> None:
        super().__init__(f"segment {segment_id}: revision {revision} is not the next one ({expected})")
        self.segment_id = segment_id
        self.revision = revision
        self.expected = expected


@dataclass(frozen=True)
class SegmentEntry:
    """One published version of one segment.

    Attributes:
        segment_id, revision, version: identity; see the module docstring.
        action, author, published_at, summary: what, who, when (UTC) and why.
        content_hash: hash of the typed segment without its version (`segment_hash`).
        definition, attributes: the segment file and ``attributes.yaml`` as published (None: none declared).
        segment: the typed segment parsed from them, its ``version`` the catalog's.
        entry_id: unique per write, part of the record key so compaction never drops an entry.
    """

    segment_id: str
    revision: int
    version: int
    action: CatalogAction
    author: str
    published_at: datetime
    summary: str
    content_hash: str
    definition: SourceFile
    attributes: SourceFile | None
    segment: Segment
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def key(self) -> bytes:
        """The record key: kind and segment, revision and the write's own id."""
        return f"{SEGMENT_KEY_PREFIX}{self.segment_id}/{self.revision:08d}/{self.entry_id}".encode()


def _compare(compare: Compare) -> dict[str, Any]:
    return {compare.op.value: list(compare.values)}


def canonical(condition: Condition) -> dict[str, Any]:
    """A JSON form of the typed condition, one spelling per meaning (what `segment_hash` covers)."""
    match condition:
        case ProfileField(path=path, test=test):
            return {"profile": path, "exists": test} if isinstance(test, bool) else {"profile": path, **_compare(test)}
        case Consent(channel=channel, topic=topic):
            return {"consent": {"channel": channel, "topic": topic}}
        case EventCount(event_type=event_type, bound=bound, count=count, within=within):
            return {"event": event_type, "count": {bound.value: count}, "within_seconds": within.total_seconds()}
        case LastEvent(event_type=event_type, window=window, recent=recent):
            return {"event": event_type, "within_seconds" if recent else "not_within_seconds": window.total_seconds()}
        case LastPayload(event_type=event_type, path=path, compare=compare):
            return {"event": event_type, "last": {"field": path, **_compare(compare)}}
        case All(items=items):
            return {"all": [canonical(item) for item in items]}
        case AnyOf(items=items):
            return {"any": [canonical(item) for item in items]}
        case Not(item=item):
            return {"not": canonical(item)}
        case _:
            assert_never(condition)


def segment_hash(segment: Segment) -> str:
    """A hash of what a segment selects and says (its description), leaving out its version and file."""
    body = {"id": segment.id, "description": segment.description, "match": canonical(segment.match)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def published_segment(segment_id: str, version: int, definition: SourceFile,
                      attributes: SourceFile | None) -> Segment:
    """The typed segment an entry's sources describe, checked as ``journeys validate`` checks a file.

    Event types and payload fields are not checked against a catalogue here: a reader may lack the
    deployment's ``sources.yaml``; the publisher checked them, and the content hash holds the result.

    Raises:
        CatalogEntryError: ``validation`` naming the first problem, ``snapshot`` for another segment's file.
    """
    declared, problems = parse_attributes(attributes.name, attributes.text) if attributes else (Attributes(), [])
    parsed: Segment | None = None
    if not problems:
        try:
            parsed, problems = parse_segment(definition.name, load_located(definition.text), declared, None)
        except YamlSyntaxError as exc:
            raise CatalogEntryError(RejectReason.VALIDATION, f"{definition.name[:100]}:{exc.line or 1}: "
                                                             f"{exc.problem[:200]}") from exc
        except _DATA_ERRORS as exc:
            # The parser assumes what a file's author can write; data that breaks that assumption is invalid.
            raise CatalogEntryError(RejectReason.VALIDATION, f"the segment does not parse: {type(exc).__name__}: "
                                                             f"{str(exc)[:200]}") from exc
    if problems or parsed is None:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        first = str(problems[0])[:300] if problems else "the segment does not parse"
        raise CatalogEntryError(RejectReason.VALIDATION, first + more)
    if parsed.id != segment_id:
        raise CatalogEntryError(RejectReason.SNAPSHOT, f"the definition is segment {parsed.id[:80]!r}, "
                                                       f"the entry {segment_id[:80]!r}")
    return replace(parsed, version=version, file=f"catalog:{segment_id}@v{version}")


#: What parsing arbitrary published text can raise besides its typed errors: turned into a rejection.
_DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, IndexError, RecursionError)


# --- codec -------------------------------------------------------------------------------------


def _file(source: SourceFile | None) -> dict[str, str] | None:
    return None if source is None else {"name": source.name, "text": source.text}


def encode_segment_entry(entry: SegmentEntry) -> tuple[bytes, bytes]:
    """The record key and value (UTF-8 JSON, sorted keys: the bytes a signature covers)."""
    value = {
        "format": 1, "kind": EntryKind.SEGMENT.value,
        "segment_id": entry.segment_id, "revision": entry.revision, "version": entry.version,
        "action": entry.action.value, "author": entry.author, "published_at": entry.published_at.isoformat(),
        "summary": entry.summary, "content_hash": entry.content_hash, "entry_id": entry.entry_id,
        "definition": _file(entry.definition), "attributes": _file(entry.attributes),
    }
    return entry.key, json.dumps(value, sort_keys=True, ensure_ascii=False).encode()


def read_segment_record(key: bytes | None, value: bytes | None, signature: bytes | None, *,
                        keys: SigningKeys | None) -> SegmentEntry:
    """Reads one segment record, trusting nothing: size and signature, then `decode_segment_entry`.

    Raises:
        CatalogEntryError: naming what is wrong, with a `RejectReason`.
    """
    return decode_segment_entry(key, verify_record(key, value, signature, keys=keys))


def decode_segment_entry(key: bytes | None, value: bytes | None) -> SegmentEntry:
    """Reads one record's segment entry and parses its segment as ``journeys validate`` would.

    Raises:
        CatalogEntryError: naming what is wrong, with a `RejectReason`.
    """
    raw = entry_object(value)
    check_format(raw, SEGMENT_ENTRY_FIELDS)
    if raw.get("kind") != EntryKind.SEGMENT.value:
        raise CatalogEntryError(RejectReason.FIELD, f"kind {str(raw.get('kind'))[:40]!r} is not a segment's")
    action = raw.get("action")
    if isinstance(action, str) and action in CatalogAction.__members__.values() and action not in SEGMENT_ACTIONS:
        raise CatalogEntryError(RejectReason.UNSUPPORTED_VERSION, f"segment action {action!r} is a newer release's")
    try:
        segment_id, revision, version = _text(raw["segment_id"]), _positive(raw["revision"]), _positive(raw["version"])
        entry_id, content_hash = _text(raw["entry_id"]), _text(raw["content_hash"])
        definition = _source(raw["definition"])
        attributes = None if raw["attributes"] is None else _source(raw["attributes"])
        action, author = CatalogAction(raw["action"]), _text(raw["author"])
        published_at, summary = datetime.fromisoformat(_text(raw["published_at"])), _text(raw["summary"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogEntryError(RejectReason.FIELD, f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    expected_key = f"{SEGMENT_KEY_PREFIX}{segment_id}/{revision:08d}/{entry_id}".encode()
    if key is not None and key != expected_key:
        raise CatalogEntryError(RejectReason.KEY, f"the key {key[:120]!r} does not match the entry ({expected_key!r})")
    segment = published_segment(segment_id, version, definition, attributes)
    if segment_hash(segment) != content_hash:
        raise CatalogEntryError(RejectReason.SNAPSHOT, "the entry's content hash does not match its segment")
    return SegmentEntry(segment_id, revision, version, action, author, published_at, summary, content_hash,
                        definition, attributes, segment, entry_id)


def _source(raw: Any) -> SourceFile:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("text"), str):
        raise TypeError("a source file needs a name and a text")
    return SourceFile(raw["name"], raw["text"])


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{str(value)[:40]!r} is not a string")
    return value


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


# --- the catalog's segments ----------------------------------------------------------------------


def segment_of_key(key: bytes | None) -> str:
    """The segment a record key names (``segment:<id>/...``), "" when it names none readable."""
    head = (key or b"").split(b"/", 1)[0].decode("utf-8", "replace")
    segment_id = head.removeprefix(SEGMENT_KEY_PREFIX)
    return segment_id if head.startswith(SEGMENT_KEY_PREFIX) and _SEGMENT_ID.match(segment_id) else ""


class SegmentCatalog:
    """Every accepted segment entry, per segment in revision order; built by `apply` in log order.

    Skipped records are noted per segment (`reject`): a segment whose newest record was skipped
    keeps its last accepted version, and readiness and the commands say so.
    """

    def __init__(self, entries: Iterable[SegmentEntry] = ()) -> None:
        self._entries: dict[str, list[SegmentEntry]] = {}
        self._rejected: dict[str, Rejection] = {}
        for entry in entries:
            self.apply(entry)

    def apply(self, entry: SegmentEntry) -> None:
        """Accepts ``entry`` as its segment's next revision (and next version).

        Raises:
            SegmentConflictError: it is not the next revision, or its version does not follow.
        """
        history = self._entries.get(entry.segment_id, [])
        expected = len(history) + 1
        last_version = history[-1].version if history else 0
        if entry.revision != expected or entry.version != last_version + 1:
            raise SegmentConflictError(entry.segment_id, entry.revision, expected)
        self._entries.setdefault(entry.segment_id, []).append(entry)
        self._rejected.pop(entry.segment_id, None)

    def reject(self, segment_id: str, rejection: Rejection) -> None:
        """Notes a skipped record as its segment's newest (until an entry of that segment is accepted)."""
        if segment_id:
            self._rejected[segment_id] = rejection

    def rejection(self, segment_id: str) -> Rejection | None:
        return self._rejected.get(segment_id)

    def rejections(self) -> dict[str, Rejection]:
        """Per segment, the skipped record newer than its newest accepted entry."""
        return dict(sorted(self._rejected.items()))

    @property
    def segment_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def latest(self, segment_id: str) -> SegmentEntry | None:
        history = self._entries.get(segment_id)
        return history[-1] if history else None

    def history(self, segment_id: str) -> tuple[SegmentEntry, ...]:
        return tuple(self._entries.get(segment_id, ()))

    def segments(self) -> tuple[Segment, ...]:
        """The latest version of every segment: what membership is evaluated by."""
        return tuple(self._entries[s][-1].segment for s in self.segment_ids)

    def position(self) -> dict[str, int]:
        """Per segment, the current version."""
        return {s: h[-1].version for s, h in sorted(self._entries.items())}


def next_segment_entry(catalog: SegmentCatalog, segment: Segment, *, definition: SourceFile,
                       attributes: SourceFile | None, author: str, at: datetime,
                       summary: str) -> SegmentEntry | None:
    """The entry that publishes ``segment`` on top of ``catalog``; None when its content is unchanged.

    ``segment`` is the publisher's parse of ``definition`` (checked against the event catalogue);
    its version becomes the catalog's.
    """
    latest = catalog.latest(segment.id)
    digest = segment_hash(segment)
    if latest is not None and latest.content_hash == digest:
        return None
    version = 1 if latest is None else latest.version + 1
    revision = 1 if latest is None else latest.revision + 1
    published = replace(segment, version=version, file=f"catalog:{segment.id}@v{version}")
    return SegmentEntry(segment.id, revision, version, CatalogAction.PUBLISH, author, at, summary, digest,
                        definition, attributes, published)


__all__ = [
    "SEGMENT_ACTIONS", "SEGMENT_ENTRY_FIELDS", "SEGMENT_KEY_PREFIX", "SegmentCatalog", "SegmentConflictError",
    "SegmentEntry", "canonical", "decode_segment_entry", "encode_segment_entry", "next_segment_entry",
    "published_segment", "read_segment_record", "segment_hash", "segment_of_key",
]
