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
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from core.errors import EventflowError
from core.signing import SigningKeys
from journeys.loader import check_snapshot
from journeys.model import EntryRule, JourneyDefinition, SnapshotFormatError, decode_snapshot
from journeys.steps import walk

#: The entry format this code writes and reads. A higher one is a newer release's: skipped and
#: counted as ``unsupported_version`` until this process is upgraded, never guessed.
ENTRY_FORMAT = 1
#: The largest record value read; a larger one is skipped unread (a snapshot is a few KB).
MAX_ENTRY_BYTES = 1_048_576
#: The deepest nesting of JSON arrays and objects read (a snapshot nests about 15 deep); checked
#: before parsing, without recursion, so no record can exhaust the parser's stack.
MAX_NESTING = 64
#: The most steps (nested ones included) a snapshot may have. Checking a snapshot test-renders a
#: template per send, in time that grows faster than the steps; this bounds it near a second.
MAX_STEPS = 100
#: The record header that carries the entry's signature (`core.signing.SigningKeys.sign`).
SIGNATURE_HEADER = "eventflow-signature"
#: Every field of a format-1 entry; another is a newer release's (``unsupported_version``).
ENTRY_FIELDS = frozenset({"format", "journey_id", "revision", "version", "action", "state", "author", "published_at",
                          "summary", "content_hash", "entry_id", "definition", "templates", "snapshot"})


class RejectReason(enum.StrEnum):
    """Why a catalog record was skipped: the bounded label of ``eventflow_catalog_invalid_entries_total``."""

    SIZE = "size"  # larger than MAX_ENTRY_BYTES
    SIGNATURE = "signature"  # unsigned, or not signed by one of the configured keys
    DEPTH = "depth"  # nested deeper than MAX_NESTING
    JSON = "json"  # not UTF-8 JSON, not an object, or a tombstone
    FORMAT = "format"  # no valid entry format
    UNSUPPORTED_VERSION = "unsupported_version"  # a newer release's entry or snapshot format, or an unknown field
    FIELD = "field"  # an entry field missing or of the wrong type
    KEY = "key"  # the record key does not match the entry
    SNAPSHOT = "snapshot"  # the snapshot does not decode, or its hashes do not match its content
    VALIDATION = "validation"  # the snapshot fails the checks of `journeys validate`
    CONFLICT = "conflict"  # not the journey's next revision: a writer lost a race (harmless)
    ERROR = "error"  # an unexpected failure applying the entry (a bug; the record is still skipped)


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
    """A catalog record that is not applied; ``reason`` is a bounded label for the error metric."""

    def __init__(self, reason: RejectReason, problem: str) -> None:
        super().__init__(f"rejected catalog entry ({reason.value}): {problem}")
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
        raise CatalogEntryError(RejectReason.SNAPSHOT, f"the snapshot's hash {str(snapshot.get('content_hash'))[:40]!r} "
                                                       "does not match its content")
    try:
        decoded = decode_snapshot(snapshot)
        return PublishedJourney(
            id=decoded.id, version=decoded.version, trigger_event=str(snapshot["trigger_event"]),
            steps=decoded.steps, trigger_filter=snapshot.get("trigger_filter"),
            entry_rule=EntryRule(snapshot["entry_rule"]), key_path=decoded.key_path,
            listeners=decoded.listeners, exit_events=decoded.exit_events, templates=decoded.templates,
            source_file=f"catalog:{decoded.id}@v{decoded.version}", published=copy.deepcopy(dict(snapshot)),
            goal=decoded.goal, holdout_percent=decoded.holdout_percent)
    except SnapshotFormatError as exc:
        raise CatalogEntryError(RejectReason.UNSUPPORTED_VERSION, str(exc)) from exc
    except _DATA_ERRORS as exc:
        raise CatalogEntryError(RejectReason.SNAPSHOT, f"the snapshot does not decode: {_brief(exc)}") from exc


#: What reading arbitrary JSON data into the typed model can raise (a string where a list belongs,
#: a float too large for an int, ...): turned into the typed rejection, never let through.
_DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, IndexError, RecursionError)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


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
        raise CatalogEntryError(RejectReason.FIELD, "a source file needs a name and a text")
    return SourceFile(raw["name"], raw["text"])


def signed_bytes(key: bytes | None, value: bytes) -> bytes:
    """What a signature covers: the record key (length-prefixed, so key and value cannot trade bytes) and value.

    The value is the canonical entry (`encode_entry`: sorted keys, one spelling), signed as written,
    so no reader ever re-serialises JSON to check a signature.
    """
    key = key or b""
    return b"eventflow-catalog-entry\x00" + len(key).to_bytes(4, "big") + key + value


def sign_record(key: bytes, value: bytes, keys: SigningKeys) -> str:
    """The `SIGNATURE_HEADER` value of the record ``(key, value)``."""
    return keys.sign(signed_bytes(key, value))


#: A JSON string, escapes included (the unrolled form: linear, no nested backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(value: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit``, counted outside strings, without recursion."""
    depth = 0
    for byte in _JSON_STRING.sub(b"", value).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def verify_record(key: bytes | None, value: bytes | None, signature: bytes | None, *,
                  keys: SigningKeys | None) -> bytes:
    """The record's value once its size and signature are checked (every entry kind's first step).

    Args:
        signature: the record's `SIGNATURE_HEADER` value, if it has one.
        keys: the keys a signature must verify with; None accepts unsigned records (development).

    Raises:
        CatalogEntryError: naming what is wrong, with a `RejectReason`.
    """
    if value is None:
        raise CatalogEntryError(RejectReason.JSON, "the record has no value (a tombstone)")
    if len(value) > MAX_ENTRY_BYTES:
        raise CatalogEntryError(RejectReason.SIZE, f"the record is {len(value)} bytes, above {MAX_ENTRY_BYTES}")
    if keys is not None:
        if signature is None:
            raise CatalogEntryError(RejectReason.SIGNATURE, f"the record is not signed (no {SIGNATURE_HEADER} header)")
        problem = keys.verify(signed_bytes(key, value), signature.decode("ascii", "replace")[:300])
        if problem is not None:
            raise CatalogEntryError(RejectReason.SIGNATURE, problem)
    return value


def read_record(key: bytes | None, value: bytes | None, signature: bytes | None, *,
                keys: SigningKeys | None) -> CatalogEntry:
    """Reads one journey record, trusting nothing: size, signature (`verify_record`), then `decode_entry`.

    Raises:
        CatalogEntryError: naming what is wrong, with a `RejectReason`.
    """
    return decode_entry(key, verify_record(key, value, signature, keys=keys))


def entry_object(value: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object, bounded first (size, then nesting counted without parsing).

    Raises:
        CatalogEntryError: a tombstone, too large, too deep, not UTF-8 JSON or not an object.
    """
    if value is None:
        raise CatalogEntryError(RejectReason.JSON, "the record has no value (a tombstone)")
    if len(value) > MAX_ENTRY_BYTES:
        raise CatalogEntryError(RejectReason.SIZE, f"the record is {len(value)} bytes, above {MAX_ENTRY_BYTES}")
    if _too_deep(value, MAX_NESTING):
        raise CatalogEntryError(RejectReason.DEPTH, f"arrays and objects nest deeper than {MAX_NESTING}")
    try:
        raw = json.loads(value, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CatalogEntryError(RejectReason.JSON, f"not UTF-8 JSON: {_brief(exc)}") from exc
    if not isinstance(raw, dict):
        raise CatalogEntryError(RejectReason.JSON, "the value is not a JSON object")
    return raw


def check_format(raw: Mapping[str, Any], known_fields: frozenset[str]) -> None:
    """The entry's ``format`` is this release's and it has no field this release does not know.

    Raises:
        CatalogEntryError: ``unsupported_version`` for a newer release's entry, ``format`` for no valid one.
    """
    entry_format = raw.get("format")
    if isinstance(entry_format, int) and not isinstance(entry_format, bool) and entry_format > ENTRY_FORMAT:
        raise CatalogEntryError(RejectReason.UNSUPPORTED_VERSION, f"entry format {entry_format} is newer than "
                                                                  f"this release's ({ENTRY_FORMAT})")
    if entry_format != ENTRY_FORMAT or isinstance(entry_format, bool):
        raise CatalogEntryError(RejectReason.FORMAT, f"entry format {str(entry_format)[:40]!r} is not {ENTRY_FORMAT}")
    unknown = sorted(set(raw) - known_fields)
    if unknown:
        raise CatalogEntryError(RejectReason.UNSUPPORTED_VERSION, f"fields this release does not know: "
                                                                  f"{', '.join(repr(u[:40]) for u in unknown[:5])}")


def decode_entry(key: bytes | None, value: bytes | None) -> CatalogEntry:
    """Reads one record's entry and checks its snapshot fully (the checks of ``journeys validate``).

    The signature is `read_record`'s: this is the part every reader runs, signed or not.

    Raises:
        CatalogEntryError: naming what is wrong, with a `RejectReason`.
    """
    raw = entry_object(value)
    check_format(raw, ENTRY_FIELDS)
    try:
        entry = CatalogEntry(
            journey_id=_text(raw["journey_id"]), revision=_positive(raw["revision"]),
            version=_positive(raw["version"]), action=CatalogAction(raw["action"]), state=JourneyState(raw["state"]),
            author=_text(raw["author"]), published_at=datetime.fromisoformat(_text(raw["published_at"])),
            summary=_text(raw["summary"]), content_hash=_text(raw["content_hash"]), snapshot=raw["snapshot"],
            definition=_source(raw["definition"]), templates=tuple(_source(t) for t in _list(raw["templates"])),
            entry_id=_text(raw["entry_id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogEntryError(RejectReason.FIELD, _brief(exc)) from exc
    if key is not None and key != entry.key:
        raise CatalogEntryError(RejectReason.KEY, f"the key {key[:120]!r} does not match the entry ({entry.key!r})")
    if not isinstance(entry.snapshot, dict):
        raise CatalogEntryError(RejectReason.FIELD, "snapshot is not an object")
    definition = entry.journey()
    if definition.id != entry.journey_id or definition.version != entry.version:
        raise CatalogEntryError(RejectReason.SNAPSHOT, f"the snapshot is {definition.id[:80]} v{definition.version}, "
                                                       f"the entry {entry.journey_id[:80]} v{entry.version}")
    if content_hash(entry.snapshot) != entry.content_hash:
        raise CatalogEntryError(RejectReason.SNAPSHOT, "the entry's content hash does not match its snapshot")
    if sum(1 for _ in walk(definition.steps)) > MAX_STEPS:
        raise CatalogEntryError(RejectReason.VALIDATION, f"the snapshot has more than {MAX_STEPS} steps")
    problems = _validated(entry.snapshot, definition)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CatalogEntryError(RejectReason.VALIDATION, problems[0][:300] + more)
    return entry


#: Snapshots already checked (by a hash of their whole JSON) and their problems: a pause, resume or
#: archive entry repeats its journey's snapshot, so a catalog is checked once per distinct content.
_CHECKED: dict[bytes, tuple[str, ...]] = {}
_CHECKED_MAX = 1024
_CHECKED_LOCK = threading.Lock()  # readers check records off their event loops, in threads


def _validated(snapshot: Mapping[str, Any], definition: JourneyDefinition) -> tuple[str, ...]:
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).digest()
    with _CHECKED_LOCK:
        found = _CHECKED.get(digest)
    if found is not None:
        return found
    try:
        found = tuple(f"{p.file}: {p.message}" for p in check_snapshot(snapshot, definition))
    except _DATA_ERRORS as exc:
        # The checks assume what a schema-valid document holds; data that breaks that assumption is invalid.
        found = (f"the snapshot does not check: {_brief(exc)}",)
    with _CHECKED_LOCK:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[digest] = found
    return found


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{str(value)[:40]!r} is not a string")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{str(value)[:40]!r} is not a list")
    return value


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


# --- the catalog's state -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A record the catalog skipped, for the journey its key names (unverified: it was rejected).

    Attributes:
        journey_id: the first part of the record key ("" when the key names none).
        offset: where the record is in the topic.
        reason, problem: why it was skipped.
    """

    journey_id: str
    offset: int
    reason: RejectReason
    problem: str

    def describe(self) -> str:
        return f"offset {self.offset}: {self.reason.value}: {self.problem}"


_PRINTABLE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class EntryKind(enum.StrEnum):
    """What a catalog record describes, named by its key: ``<journey>/...`` or ``<kind>:<id>/...``.

    Journey keys predate kinds and carry no prefix (a journey id has no ``:``); other kinds are
    prefixed, so a release that predates a kind reads its records as journeys and skips them as
    ``unsupported_version`` (unknown fields), noted against no journey.
    """

    JOURNEY = "journey"
    SEGMENT = "segment"


def kind_of_key(key: bytes | None) -> EntryKind | None:
    """The kind a record key names; None for a prefix this release does not know (a newer release's)."""
    head = (key or b"").split(b"/", 1)[0]
    if b":" not in head:
        return EntryKind.JOURNEY
    prefix = head.split(b":", 1)[0].decode("utf-8", "replace")
    return EntryKind(prefix) if prefix in EntryKind.__members__.values() and prefix != EntryKind.JOURNEY else None


def journey_of_key(key: bytes | None) -> str:
    """The journey a record key names (``<journey>/<revision>/<entry id>``), "" when it names none readable."""
    journey_id = (key or b"").split(b"/", 1)[0].decode("utf-8", "replace")
    return journey_id if _PRINTABLE_ID.match(journey_id) else ""


class Catalog:
    """Every accepted entry, per journey in revision order; built by `apply` in log order.

    Readers also note each journey's skipped records (`reject`): a journey whose newest record was
    skipped still serves its last accepted entry, and the commands say so.
    """

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._entries: dict[str, list[CatalogEntry]] = {}
        self._definitions: dict[str, JourneyDefinition] = {}
        self._rejected: dict[str, Rejection] = {}
        for entry in entries:
            self.apply(entry)

    def reject(self, rejection: Rejection) -> None:
        """Notes a skipped record as its journey's newest (until an entry of that journey is accepted)."""
        if rejection.journey_id:
            self._rejected[rejection.journey_id] = rejection

    def rejection(self, journey_id: str) -> Rejection | None:
        """The record of ``journey_id`` skipped after its newest accepted entry, if any."""
        return self._rejected.get(journey_id)

    def rejections(self) -> dict[str, Rejection]:
        """Per journey, the skipped record newer than its newest accepted entry."""
        return dict(sorted(self._rejected.items()))

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
        definition = entry.journey()
        self._entries.setdefault(entry.journey_id, []).append(entry)
        self._definitions[entry.journey_id] = definition
        self._rejected.pop(entry.journey_id, None)

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
    "CatalogError", "ENTRY_FIELDS", "ENTRY_FORMAT", "EntryKind", "JourneyState", "MAX_ENTRY_BYTES", "MAX_NESTING", "MAX_STEPS",
    "PublishedJourney", "RejectReason", "Rejection", "SIGNATURE_HEADER", "SourceFile", "check_format", "content_hash",
    "decode_entry", "definition_from_snapshot", "encode_entry", "entry_object", "journey_of_key", "kind_of_key",
    "next_entry", "read_record", "sign_record", "signed_bytes", "verify_record", "with_version",
]
