"""What the consumer does with one event: the journey router's actions plus the built-in routes.

Built-in: a ``SubscriptionChanged`` event updates the customer's ``CustomerPreferences`` workflow,
which every send consults, so an opt-out stops sends on that channel across all journeys. An
event that identifies its customer or carries contact details updates the customer's profile
(`UpdateProfile`, in the same workflow; workflows/profile.py), before any journey it starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from events.model import CustomerEvent
from journeys.expressions import ExpressionMetrics
from journeys.model import JourneyDefinition
from journeys.routing import Action, Router
from workflows.preferences import preferences_workflow_id
from workflows.profile import IDENTIFY_EVENT_TYPES, is_identify, profile_update_of

SUBSCRIPTION_CHANGED = "SubscriptionChanged"


@dataclass(frozen=True)
class UpdatePreferences:
    """Signal-with-start the customer's preferences workflow with the event."""

    workflow_id: str
    journey_id: str = "preferences"


@dataclass(frozen=True)
class UpdateProfile:
    """Signal-with-start the customer's preferences workflow with the event's profile data.

    ``identify``: the event is an identify event, which also ends a forgotten customer's tombstone.
    """

    workflow_id: str
    identify: bool = False
    journey_id: str = "profile"


@dataclass(frozen=True)
class ObserveSegments:
    """Record the event for the segments that read its type and re-evaluate its customer's segments."""

    workflow_id: str = ""
    journey_id: str = "segments"


Route = Action | UpdatePreferences | UpdateProfile | ObserveSegments


class _SegmentReads(Protocol):
    """The segments' side of routing (`store.segments.SegmentStore`): read on every event, so a live
    catalog's new set routes from the next record on."""

    @property
    def event_types(self) -> frozenset[str]: ...

    def reads(self, event_type: str) -> bool: ...


class SegmentRoutes:
    """A router plus segment membership: events segments read, and every profile or consent change,
    also re-evaluate the customer's segments (after the journeys' actions, so the profile is written first)."""

    def __init__(self, inner: _Router, segments: _SegmentReads) -> None:
        self._inner = inner
        self._segments = segments

    @property
    def event_types(self) -> frozenset[str]:
        return self._inner.event_types | self._segments.event_types

    def route(self, event: CustomerEvent) -> list[Route]:
        routes = list(self._inner.route(event))
        if self._segments.reads(event.event_type) or \
                any(isinstance(r, UpdateProfile | UpdatePreferences) for r in routes):
            routes.append(ObserveSegments())
        return routes


class _Router(Protocol):
    @property
    def event_types(self) -> frozenset[str]: ...

    def route(self, event: CustomerEvent) -> list[Route]: ...


class EventRoutes:
    """Compiled once from the journey definitions; `route` is called for every decoded event."""

    def __init__(self, definitions: Iterable[JourneyDefinition], *,
                 expression_metrics: ExpressionMetrics | None = None) -> None:
        self._journeys = Router(definitions, on_error=expression_metrics)
        self._event_types = self._journeys.event_types | {SUBSCRIPTION_CHANGED} | IDENTIFY_EVENT_TYPES

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type that can cause an action; decoding other types stops at validation."""
        return self._event_types

    def route(self, event: CustomerEvent) -> list[Route]:
        routes: list[Route] = list(self._journeys.route(event))
        if event.event_type == SUBSCRIPTION_CHANGED:
            routes.append(UpdatePreferences(preferences_workflow_id(event.customer.id)))
        if (routes or is_identify(event)) and profile_update_of(event) is not None:
            # First, so a journey this event starts already sends to the address it carries.
            routes.insert(0, UpdateProfile(preferences_workflow_id(event.customer.id), is_identify(event)))
        return routes
