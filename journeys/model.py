"""The journey definition model: what a YAML file in ``journeys/definitions`` says, validated."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    """One template: per channel, per locale, a subject (email only) and a body, as Jinja2 source."""

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
        steps: the step list, as plain data the interpreter walks.
        templates: every template the steps reference, so an instance's snapshot is self-contained.
        source_file: where the definition came from, for error messages.
    """

    id: str
    version: int
    trigger_event: str
    steps: tuple[Mapping[str, Any], ...]
    trigger_filter: str | None = None
    entry_rule: EntryRule = EntryRule.ONCE_PER_KEY
    key_path: str | None = None
    listeners: tuple[Listener, ...] = ()
    exit_events: tuple[Listener, ...] = ()
    templates: Mapping[str, Template] = field(default_factory=dict)
    source_file: str = ""

    def snapshot(self) -> dict[str, Any]:
        """The JSON form a workflow instance is started with: immutable for that instance's life."""
        body = {
            "id": self.id,
            "version": self.version,
            "trigger_event": self.trigger_event,
            "entry_rule": self.entry_rule.value,
            "trigger_filter": self.trigger_filter,
            "key_path": self.key_path,
            "exit_events": [e.as_json() for e in self.exit_events],
            "listeners": [e.as_json() for e in self.listeners],
            "steps": [dict(s) for s in self.steps],
            "templates": {
                t.id: {"id": t.id, "default_locale": t.default_locale, "variants": t.variants}
                for t in self.templates.values()
            },
        }
        body["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return body
