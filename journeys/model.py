"""The journey definition model: what a YAML file in ``journeys/definitions`` says, validated.

A definition file is first read into a `JourneyDocument` (`parse_document`: what the author wrote,
typed, nothing resolved); every check runs over that, and the checked document becomes a
`JourneyDefinition` (listener keys resolved, journey defaults folded into the sends).

A definition travels to its workflow instances as a *snapshot* (`JourneyDefinition.snapshot`),
JSON in the workflow input, fixed for the instance's life. Snapshots carry a ``format``:

- format 1 (no ``format`` key; every history recorded before the typed model): ``steps`` is the
  YAML document as the loader read it, with each wait_for/digest ``key`` resolved in place;
- format 2: ``steps`` is the typed steps' document form (`journeys.steps.encode_step`: defaults
  left out, keys resolved).

`decode_snapshot` reads both into a `JourneySnapshot`; an unknown format is an error, never a guess.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from activities.caps import Priority
from journeys.goals import Goal
from journeys.steps import Step, decode_steps, encode_step

#: The snapshot format `JourneyDefinition.snapshot` writes.
SNAPSHOT_FORMAT = 2
#: Every format `decode_snapshot` reads (recorded histories and running journeys hold format 1).
SNAPSHOT_FORMATS = (1, 2)


class EntryRule(enum.StrEnum):
    """How often one customer may enter a journey; decides the workflow ID and its reuse policy."""

    ONCE = "once"
    ONCE_PER_KEY = "once_per_key"
    ONE_ACTIVE = "one_active"
    EVERY_TIME = "every_time"


@dataclass(frozen=True)
class Listener:
    """An event type a running journey reacts to, where its instance key is in that event, and a condition.

    ``key_path`` is read from the incoming event and compared with the instance key (the trigger
    event's value at the journey's entry key); ``when`` is an expression over the incoming event.
    """

    event_type: str
    key_path: str | None = None
    when: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """The listener as it appears in a snapshot."""
        return {"event_type": self.event_type, "key_path": self.key_path, "when": self.when}


@dataclass(frozen=True)
class Template:
    """One template: per channel, per locale, a subject (email only), a body and an optional ``html`` part
    (email only, sent as the body's HTML alternative), as Jinja2 source."""

    id: str
    default_locale: str
    variants: Mapping[str, Mapping[str, Mapping[str, str]]]


@dataclass(frozen=True)
class JourneyDefinition:
    """A validated journey.

    Attributes:
        id, version: identity; a running instance keeps the version it started with.
        trigger_event: the event type that starts an instance.
        trigger_filter: an expression over the event that must hold for a start, or None.
        entry_rule, key_path: re-entry rule and, for ``once_per_key``, where the instance key is.
        listeners: events a running instance receives as signals (waits, exits, digests).
        steps: the typed step tree.
        templates: every template the steps reference, so an instance's snapshot is self-contained.
        source_file: where the definition came from, for error messages.
    """

    id: str
    version: int
    trigger_event: str
    steps: tuple[Step, ...]
    trigger_filter: str | None = None
    entry_rule: EntryRule = EntryRule.ONCE_PER_KEY
    key_path: str | None = None
    listeners: tuple[Listener, ...] = ()
    exit_events: tuple[Listener, ...] = ()
    templates: Mapping[str, Template] = field(default_factory=dict)
    source_file: str = ""
    goal: Goal | None = None
    holdout_percent: int = 0

    def snapshot(self) -> dict[str, Any]:
        """The JSON form a workflow instance is started with: immutable for that instance's life."""
        body = {
            "format": SNAPSHOT_FORMAT,
            "id": self.id,
            "version": self.version,
            "trigger_event": self.trigger_event,
            "entry_rule": self.entry_rule.value,
            "trigger_filter": self.trigger_filter,
            "key_path": self.key_path,
            "exit_events": [e.as_json() for e in self.exit_events],
            "listeners": [e.as_json() for e in self.listeners],
            "steps": [encode_step(s) for s in self.steps],
            "templates": {
                t.id: {"id": t.id, "default_locale": t.default_locale, "variants": t.variants}
                for t in self.templates.values()
            },
        }
        # Only when set, so the snapshots (and content hashes) of journeys without them stay as they were.
        if self.goal is not None:
            body["goal"] = self.goal.as_json()
        if self.holdout_percent:
            body["holdout_percent"] = self.holdout_percent
        body["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return body


class DocumentShapeError(ValueError):
    """A definition document that cannot be read into a `JourneyDocument` (only one the schema refused)."""


@dataclass(frozen=True)
class JourneyDocument:
    """A definition document read into types, before its checks: what the author wrote, nothing resolved.

    It maps one-to-one onto the document, so a check finds a value's line by its document path:
    ``("exit", index, "when")``, ``("goal", "after")``, or a step's path from `journeys.steps.walk`.

    Attributes:
        exits: the ``exit`` listeners, each ``key_path`` as written (None: the entry key applies).
        goal: the ``goal``, its ``key_path`` as written and its ``filter`` as ``when``.
        priority, caps: the journey's defaults for every send (folded into the sends once checked).
    """

    id: str
    version: int
    trigger_event: str
    steps: tuple[Step, ...]
    trigger_filter: str | None = None
    entry_rule: EntryRule = EntryRule.ONCE_PER_KEY
    entry_key: str | None = None
    exits: tuple[Listener, ...] = ()
    goal: Goal | None = None
    holdout_percent: int = 0
    priority: Priority | None = None
    caps: str | None = None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_document(data: Any) -> JourneyDocument:
    """Reads a definition document into a `JourneyDocument`; `DocumentShapeError` when its shape is not one.

    A document the JSON Schema accepts always parses; one it refused parses as far as types allow,
    so the checks can still name the mistakes the schema cannot see.
    """
    try:
        trigger, entry, goal = data["trigger"], data.get("entry") or {}, data.get("goal")
        return JourneyDocument(
            id=str(data["id"]),
            version=int(data["version"]),
            trigger_event=str(trigger["event"]),
            trigger_filter=_text(trigger.get("filter")),
            entry_rule=EntryRule(entry.get("rule", EntryRule.ONCE_PER_KEY.value)),
            entry_key=_text(entry.get("key")),
            exits=tuple(Listener(str(item["event"]), _text(item.get("key")), _text(item.get("when")))
                        for item in data.get("exit") or ()),
            steps=decode_steps(data["steps"]),
            goal=Goal(event_type=str(goal["event"]), within=str(goal["within"]), key_path=_text(goal.get("key")),
                      when=_text(goal.get("filter")), after=_text(goal.get("after"))) if goal else None,
            holdout_percent=int(data.get("holdout_percent") or 0),
            priority=Priority(data["priority"]) if data.get("priority") is not None else None,
            caps=_text(data.get("caps")),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DocumentShapeError(f"not a journey definition: {exc!r}") from exc


class SnapshotFormatError(ValueError):
    """A snapshot in a format this code does not read (written by a newer release)."""


@dataclass(frozen=True)
class JourneySnapshot:
    """A snapshot decoded: what one workflow instance runs."""

    id: str
    version: int
    steps: tuple[Step, ...]
    key_path: str | None = None
    exit_events: tuple[Listener, ...] = ()
    listeners: tuple[Listener, ...] = ()
    templates: Mapping[str, Template] = field(default_factory=dict)
    content_hash: str = ""
    format: int = SNAPSHOT_FORMAT
    goal: Goal | None = None
    holdout_percent: int = 0


def _listeners(items: Any) -> tuple[Listener, ...]:
    return tuple(Listener(str(item["event_type"]), item.get("key_path"), item.get("when")) for item in items or ())


def decode_snapshot(data: Mapping[str, Any]) -> JourneySnapshot:
    """Reads a snapshot of any format in `SNAPSHOT_FORMATS`; raises `SnapshotFormatError` for others."""
    version = data.get("format", 1)
    if version not in SNAPSHOT_FORMATS:
        raise SnapshotFormatError(f"journey snapshot format {version!r} is not one of {SNAPSHOT_FORMATS}")
    # Formats 1 and 2 differ only in what the step documents leave out, which decode_steps defaults.
    return JourneySnapshot(
        id=str(data["id"]),
        version=int(data["version"]),
        steps=decode_steps(data.get("steps") or ()),
        key_path=data.get("key_path"),
        exit_events=_listeners(data.get("exit_events")),
        listeners=_listeners(data.get("listeners")),
        templates={str(k): Template(id=str(t["id"]), default_locale=str(t["default_locale"]), variants=t["variants"])
                   for k, t in (data.get("templates") or {}).items()},
        content_hash=str(data.get("content_hash", "")),
        format=int(version),
        goal=Goal.from_json(data.get("goal")),
        holdout_percent=int(data.get("holdout_percent") or 0),
    )
