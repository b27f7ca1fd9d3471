"""What the consumer does with one event: the journey router's actions plus the built-in routes.

Built-in: a ``SubscriptionChanged`` event updates the customer's ``CustomerPreferences`` workflow,
which every send consults, so an opt-out stops sends on that channel across all journeys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from events.model import CustomerEvent
from journeys.expressions import ExpressionMetrics
from journeys.model import JourneyDefinition
from journeys.routing import Action, Router
from workflows.preferences import preferences_workflow_id

SUBSCRIPTION_CHANGED = "SubscriptionChanged"


@dataclass(frozen=True)
class UpdatePreferences:
    """Signal-with-start the customer's preferences workflow with the event."""

    workflow_id: str
    journey_id: str = "preferences"


Route = Action | UpdatePreferences


class EventRoutes:
    """Compiled once from the journey definitions; `route` is called for every decoded event."""

    def __init__(self, definitions: Iterable[JourneyDefinition], *,
                 expression_metrics: ExpressionMetrics | None = None) -> None:
        self._journeys = Router(definitions, on_error=expression_metrics)
        self._event_types = self._journeys.event_types | {SUBSCRIPTION_CHANGED}

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type that can cause an action; decoding other types stops at validation."""
        return self._event_types

    def route(self, event: CustomerEvent) -> list[Route]:
        routes: list[Route] = list(self._journeys.route(event))
        if event.event_type == SUBSCRIPTION_CHANGED:
            routes.append(UpdatePreferences(preferences_workflow_id(event.customer.id)))
        return routes
