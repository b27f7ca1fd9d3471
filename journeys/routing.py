"""Compiles journey definitions into the consumer's routing table: event type to actions.

Workflow IDs are deterministic functions of the journey, the customer and (per entry rule) the
instance key or the event id, so a redelivered event maps to the same ID and Temporal rejects
the second start. See docs/architecture.md, "Workflow ID scheme" and "Identifiers".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.ids import SEPARATOR, join_id
from events.model import CustomerEvent
from journeys import expressions
from journeys.model import EntryRule, JourneyDefinition
from journeys.paths import lookup


@dataclass(frozen=True)
class StartJourney:
    """Start an instance of ``snapshot`` with ``workflow_id``; ``reject_reuse`` forbids a closed ID's reuse."""

    workflow_id: str
    journey_id: str
    snapshot: dict[str, Any]
    reject_reuse: bool


@dataclass(frozen=True)
class SignalJourney:
    """Deliver the event to a possibly running instance; a missing instance is not an error."""

    workflow_id: str
    journey_id: str


Action = StartJourney | SignalJourney


def instance_id(journey_id: str, customer_id: str, rule: EntryRule, key: str | None, event_id: str) -> str:
    """The deterministic workflow ID of one journey instance; distinct parts give distinct IDs (`core.ids`)."""
    if rule is EntryRule.ONCE_PER_KEY:
        return join_id("journey", journey_id, customer_id, str(key))
    if rule is EntryRule.EVERY_TIME:
        return join_id("journey", journey_id, customer_id, "event", event_id)
    return join_id("journey", journey_id, customer_id)


def instances_prefix(journey_id: str) -> str:
    """What the workflow id of every instance of the journey starts with, whatever its entry rule."""
    return join_id("journey", journey_id) + SEPARATOR


class Router:
    """Maps a decoded event to the journey actions it causes; compiled once from the definitions."""

    def __init__(self, definitions: Iterable[JourneyDefinition], *,
                 on_error: expressions.ErrorHook | None = None) -> None:
        """Compiles ``definitions``; ``on_error`` counts trigger filters that fail on an event's data
        (default: `expressions.default_metrics`, in the process-wide registry)."""
        self._on_error = on_error
        self._starts: dict[str, list[tuple[JourneyDefinition, dict[str, Any]]]] = {}
        self._signals: dict[str, list[tuple[JourneyDefinition, str | None]]] = {}
        self._filters: dict[str, expressions.Node] = {}
        for definition in definitions:
            snapshot = definition.snapshot()
            self._starts.setdefault(definition.trigger_event, []).append((definition, snapshot))
            if definition.trigger_filter:
                self._filters[definition.id] = expressions.parse(definition.trigger_filter)
            for listener in definition.exit_events + definition.listeners:
                route = (definition, listener.key_path)
                if route not in self._signals.setdefault(listener.event_type, []):
                    self._signals[listener.event_type].append(route)

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type some journey starts on or listens to."""
        return frozenset(self._starts) | frozenset(self._signals)

    def route(self, event: CustomerEvent) -> list[Action]:
        """The actions for one event; empty when no journey cares (no Temporal call at all)."""
        if event.event_type not in self._starts and event.event_type not in self._signals:
            return []
        context = event.as_context()
        actions: list[Action] = []
        for definition, key_path in self._signals.get(event.event_type, ()):
            if definition.entry_rule is EntryRule.EVERY_TIME:
                continue
            key = lookup(context, key_path) if key_path else None
            if definition.entry_rule is EntryRule.ONCE_PER_KEY and key is None:
                continue
            target = instance_id(definition.id, event.customer.id, definition.entry_rule, _str(key), event.event_id)
            if all(not (isinstance(a, SignalJourney) and a.workflow_id == target) for a in actions):
                actions.append(SignalJourney(target, definition.id))
        for definition, snapshot in self._starts.get(event.event_type, ()):
            if not self._matches(definition, context):
                continue
            key = lookup(context, definition.key_path) if definition.key_path else None
            if definition.entry_rule is EntryRule.ONCE_PER_KEY and key is None:
                continue
            workflow_id = instance_id(definition.id, event.customer.id, definition.entry_rule, _str(key), event.event_id)
            actions.append(StartJourney(workflow_id, definition.id, snapshot,
                                        reject_reuse=definition.entry_rule is not EntryRule.ONE_ACTIVE))
        return actions

    def _matches(self, definition: JourneyDefinition, context: Mapping[str, Any]) -> bool:
        condition = self._filters.get(definition.id)
        return condition is None or expressions.evaluate(condition, context, journey=definition.id, step="trigger",
                                                         on_error=self._on_error)


def _str(value: object) -> str | None:
    return None if value is None else str(value)
