"""The journey catalog as data: its entries, their codec, and the state they add up to.

The catalog is a log of entries (docs/architecture.md, "Journey catalog on a compacted Kafka
topic"). Each entry is self-contained: the validated snapshot a journey instance starts with,
the YAML sources it was compiled from (for ``diff`` and ``rollback``) and who changed what, when.
Per journey, entries carry a ``revision`` (1, 2, ...: every change, lifecycle ones included) and a
``version`` (bumped only when the content changes: publish and rollback).

`Catalog.apply` folds entries in log order and accepts an entry only as the exact next revision
of its journey, so two writers that raced for the same revision cannot both win: the first in the
log does, the other is ignored (and its writer retries). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from core.errors import EventflowError
from journeys.model import EntryRule, JourneyDefinition, SnapshotFormatError, decode_snapshot

#: The entry format this code writes and reads; another is skipped as malformed, never guessed.
ENTRY_FORMAT = 1


class JourneyState(enum.StrEnum):
    """Whether a journey takes new entries; running instances continue in every state."""

    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class CatalogAction(enum.StrEnum):
    """What an entry did."""

    PUBLISH = "publish"
    PAUSE = "pause"
    RESUME = "resume"
    ARCHIVE = "archive"
    ROLLBACK = "rollback"


#: Actions that publish new content (and so a new version).
CONTENT_ACTIONS = frozenset({CatalogAction.PUBLISH, CatalogAction.ROLLBACK})


class CatalogError(EventflowError):
    """A catalog command that cannot be carried out; the message says why."""


class CatalogEntryError(EventflowError):
    """A catalog record that cannot be read; ``reason`` is a bounded label for the error metric."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(f"malformed catalog entry ({reason}): {problem}")
        self.reason = reason
        self.problem = problem


class CatalogConflictError(EventflowError):
    """An entry is not the next revision of its journey (a writer lost a race, or a gap)."""

    def __init__(self, journey_id: str, revision: int, expected: int) -> None:
        super().__init__(f"journey {journey_id}: revision {revision} is not the next one ({expected})")
        self.journey_id = journey_id
        self.revision = revision
        self.expected = expected


@dataclass(frozen=True)
class SourceFile:
    """One YAML file as it was published: its name and text."""

    name: str
    text: str


@dataclass(frozen=True)
class CatalogEntry:
    """One change to one journey.

    Attributes:
        journey_id, revision, version: identity; see the module docstring.
        action, state: what the change did and the state it leaves the journey in.
        author, published_at, summary: who, when (UTC) and why.
        content_hash: hash of the content alone (not the version), so a rollback shows the old hash.
        snapshot: the validated snapshot, its ``version`` the catalog version; what instances start with.
        definition, templates: the YAML sources the snapshot was compiled from.
        entry_id: unique per write, part of the record key so compaction never drops an entry.
    """

    journey_id: str
    revision: int
    version: int
    action: CatalogAction
    state: JourneyState
    author: str
    published_at: datetime
    summary: str
    content_hash: str
    snapshot: Mapping[str, Any]
    definition: SourceFile
    templates: tuple[SourceFile, ...] = ()
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def key(self) -> bytes:
        """The record key: journey, revision and the write's own id."""
        return f"{self.journey_id}/{self.revision:08d}/{self.entry_id}".encode()

    def journey(self) -> JourneyDefinition:
        """The journey definition the consumer routes by, rebuilt from the snapshot."""
        return definition_from_snapshot(self.snapshot)


def content_hash(snapshot: Mapping[str, Any]) -> str:
    """A hash of what a journey does, leaving out its version and the snapshot's own hash."""
    body = {k: v for k, v in snapshot.items() if k not in ("version", "content_hash")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _snapshot_hash(snapshot: Mapping[str, Any]) -> str:
    """`JourneyDefinition.snapshot`'s own hash, recomputed over whatever fields the snapshot has."""
    body = {k: v for k, v in snapshot.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def with_version(snapshot: Mapping[str, Any], version: int) -> dict[str, Any]:
    """``snapshot`` renumbered (a rollback's new version), its hash recomputed."""
    renumbered = {k: v for k, v in snapshot.items() if k != "content_hash"}
    renumbered["version"] = version
    renumbered["content_hash"] = _snapshot_hash(renumbered)
    return renumbered


@dataclass(frozen=True)
class PublishedJourney(JourneyDefinition):
    """A definition rebuilt from a catalog snapshot; instances start with that snapshot, verbatim.

    The router reads the routing fields; `snapshot` returns what was published, so snapshot fields
    this release does not model (added by a newer one) still reach the instance unchanged.
    """

    published: Mapping[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.published))


def definition_from_snapshot(snapshot: Mapping[str, Any]) -> PublishedJourney:
    """The journey a catalog snapshot describes, for routing.

    Raises:
        CatalogEntryError: the snapshot's hash does not match its content (altered after validation),
            or its routing fields do not decode.
    """
    if _snapshot_hash(snapshot) != snapshot.get("content_hash"):
        raise CatalogEntryError("snapshot", f"the snapshot's hash {snapshot.get('content_hash')!r} does not match "
                                            "its content")
    try:
        decoded = decode_snapshot(snapshot)
        return PublishedJourney(
            id=decoded.id, version=decoded.version, trigger_event=str(snapshot["trigger_event"]),
            steps=decoded.steps, trigger_filter=snapshot.get("trigger_filter"),
            entry_rule=EntryRule(snapshot["entry_rule"]), key_path=decoded.key_path,
            listeners=decoded.listeners, exit_events=decoded.exit_events, templates=decoded.templates,
            source_file=f"catalog:{decoded.id}@v{decoded.version}", published=copy.deepcopy(dict(snapshot)),
            goal=decoded.goal, holdout_percent=decoded.holdout_percent)
    except (SnapshotFormatError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CatalogEntryError("snapshot", f"the snapshot does not decode: {type(exc).__name__}: {exc}") from exc


# --- codec -------------------------------------------------------------------------------------


def encode_entry(entry: CatalogEntry) -> tuple[bytes, bytes]:
    """The record key and value (UTF-8 JSON)."""
    value = {
        "format": ENTRY_FORMAT,
        "journey_id": entry.journey_id, "revision": entry.revision, "version": entry.version,
        "action": entry.action.value, "state": entry.state.value, "author": entry.author,
        "published_at": entry.published_at.isoformat(), "summary": entry.summary,
        "content_hash": entry.content_hash, "entry_id": entry.entry_id,
        "definition": {"name": entry.definition.name, "text": entry.definition.text},
        "templates": [{"name": t.name, "text": t.text} for t in entry.templates],
        "snapshot": dict(entry.snapshot),
    }
    return entry.key, json.dumps(value, sort_keys=True, ensure_ascii=False).encode()


def _source(raw: Any) -> SourceFile:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("text"), str):
        raise CatalogEntryError("field", "a source file needs a name and a text")
    return SourceFile(raw["name"], raw["text"])


def decode_entry(key: bytes | None, value: bytes | None) -> CatalogEntry:
    """Reads one record; its snapshot is rebuilt and checked as well.

    Raises:
        CatalogEntryError: naming what is wrong (reasons: ``json``, ``format``, ``field``, ``key``, ``snapshot``).
    """
    if value is None:
        raise CatalogEntryError("json", "the record has no value (a tombstone)")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogEntryError("json", f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise CatalogEntryError("json", "the value is not a JSON object")
    if raw.get("format") != ENTRY_FORMAT:
        raise CatalogEntryError("format", f"entry format {raw.get('format')!r} is not {ENTRY_FORMAT}")
    try:
        entry = CatalogEntry(
            journey_id=str(raw["journey_id"]), revision=_positive(raw["revision"]), version=_positive(raw["version"]),
            action=CatalogAction(raw["action"]), state=JourneyState(raw["state"]), author=str(raw["author"]),
            published_at=datetime.fromisoformat(raw["published_at"]), summary=str(raw["summary"]),
            content_hash=str(raw["content_hash"]), snapshot=raw["snapshot"], definition=_source(raw["definition"]),
            templates=tuple(_source(t) for t in raw["templates"]), entry_id=str(raw["entry_id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogEntryError("field", f"{type(exc).__name__}: {exc}") from exc
    if key is not None and key != entry.key:
        raise CatalogEntryError("key", f"the key {key!r} does not match the entry ({entry.key!r})")
    if not isinstance(entry.snapshot, Mapping):
        raise CatalogEntryError("field", "snapshot is not an object")
    definition = entry.journey()
    if definition.id != entry.journey_id or definition.version != entry.version:
        raise CatalogEntryError("snapshot", f"the snapshot is {definition.id} v{definition.version}, the entry "
                                            f"{entry.journey_id} v{entry.version}")
    if content_hash(entry.snapshot) != entry.content_hash:
        raise CatalogEntryError("snapshot", "the entry's content hash does not match its snapshot")
    return entry


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


# --- the catalog's state -----------------------------------------------------------------------


class Catalog:
    """Every accepted entry, per journey in revision order; built by `apply` in log order."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._entries: dict[str, list[CatalogEntry]] = {}
        self._definitions: dict[str, JourneyDefinition] = {}
        for entry in entries:
            self.apply(entry)

    def apply(self, entry: CatalogEntry) -> None:
        """Accepts ``entry`` as its journey's next revision.

        Raises:
            CatalogConflictError: it is not the next revision, or its version does not follow
                (a content change bumps the version by one, a lifecycle change keeps it).
        """
        history = self._entries.get(entry.journey_id, [])
        expected = len(history) + 1
        last_version = history[-1].version if history else 0
        wanted_version = last_version + 1 if entry.action in CONTENT_ACTIONS else last_version
        if entry.revision != expected or entry.version != wanted_version:
            raise CatalogConflictError(entry.journey_id, entry.revision, expected)
        self._entries.setdefault(entry.journey_id, []).append(entry)
        self._definitions[entry.journey_id] = entry.journey()

    @property
    def journey_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def latest(self, journey_id: str) -> CatalogEntry | None:
        history = self._entries.get(journey_id)
        return history[-1] if history else None

    def history(self, journey_id: str) -> tuple[CatalogEntry, ...]:
        return tuple(self._entries.get(journey_id, ()))

    def version(self, journey_id: str, version: int) -> CatalogEntry | None:
        """The entry that published ``version`` (a publish or a rollback)."""
        for entry in self._entries.get(journey_id, ()):
            if entry.version == version and entry.action in CONTENT_ACTIONS:
                return entry
        return None

    def definitions(self, *states: JourneyState) -> tuple[JourneyDefinition, ...]:
        """The latest definition of every journey whose current state is one of ``states``."""
        return tuple(self._definitions[j] for j in self.journey_ids if self._entries[j][-1].state in states)

    def position(self) -> dict[str, tuple[int, JourneyState]]:
        """Per journey, the current version and state (what a consumer has seen)."""
        return {j: (h[-1].version, h[-1].state) for j, h in sorted(self._entries.items())}


def next_entry(catalog: Catalog, *, journey_id: str, action: CatalogAction, author: str, at: datetime,
               summary: str, definition: JourneyDefinition | None = None, definition_source: SourceFile | None = None,
               templates: tuple[SourceFile, ...] = (), rollback_to: int | None = None) -> CatalogEntry | None:
    """The entry that makes ``action`` happen on top of ``catalog``; None when it changes nothing.

    A publish of unchanged content (same content hash as the current version, journey active) is
    None, so re-applying a GitOps seed creates no versions.

    Raises:
        CatalogError: the action does not apply (a journey not in the catalog, an unknown version, or
            pausing an archived journey: resume or publish it first).
    """
    latest = catalog.latest(journey_id)
    revision = 1 if latest is None else latest.revision + 1
    match action:
        case CatalogAction.PUBLISH:
            if definition is None or definition_source is None:
                raise CatalogError(f"publish of {journey_id} needs a definition")
            version = 1 if latest is None else latest.version + 1
            snapshot = replace(definition, version=version).snapshot()
            if latest is not None and latest.content_hash == content_hash(snapshot) and \
                    latest.state is JourneyState.ACTIVE:
                return None
            return CatalogEntry(journey_id, revision, version, action, JourneyState.ACTIVE, author, at, summary,
                                content_hash(snapshot), snapshot, definition_source, templates)
        case CatalogAction.ROLLBACK:
            if latest is None or rollback_to is None:
                raise CatalogError(f"journey {journey_id!r} is not in the catalog")
            old = catalog.version(journey_id, rollback_to)
            if old is None:
                raise CatalogError(f"journey {journey_id} has no version {rollback_to} "
                                   f"(versions 1 to {latest.version})")
            version = latest.version + 1
            snapshot = with_version(old.snapshot, version)
            return CatalogEntry(journey_id, revision, version, action, JourneyState.ACTIVE, author, at, summary,
                                content_hash(snapshot), snapshot, old.definition, old.templates)
        case CatalogAction.PAUSE | CatalogAction.RESUME | CatalogAction.ARCHIVE:
            if latest is None:
                raise CatalogError(f"journey {journey_id!r} is not in the catalog")
            state = {CatalogAction.PAUSE: JourneyState.PAUSED, CatalogAction.RESUME: JourneyState.ACTIVE,
                     CatalogAction.ARCHIVE: JourneyState.ARCHIVED}[action]
            if latest.state is state:
                return None
            if action is CatalogAction.PAUSE and latest.state is JourneyState.ARCHIVED:
                raise CatalogError(f"journey {journey_id} is archived; resume or publish it first")
            return replace(latest, revision=revision, action=action, state=state, author=author, published_at=at,
                           summary=summary, entry_id=uuid.uuid4().hex)
    raise CatalogError(f"unknown action {action!r}")


__all__ = [
    "CONTENT_ACTIONS", "Catalog", "CatalogAction", "CatalogConflictError", "CatalogEntry", "CatalogEntryError",
    "CatalogError", "ENTRY_FORMAT", "JourneyState", "SourceFile", "content_hash", "decode_entry",
    "PublishedJourney", "definition_from_snapshot", "encode_entry", "next_entry", "with_version",
]
