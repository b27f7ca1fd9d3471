"""The consumer's router when journeys come from the live catalog: swapped whole on every change.

Active journeys route as with files (`EventRoutes`). Paused and archived journeys take no new
entries, but their running instances continue, so the events they listen to (waits, exits,
digests) are still signalled to them. A change builds a new pair of routers and replaces the
reference in one assignment on the event loop, so a record is routed wholly by one catalog state.
Segments published on the topic replace the segment files the same way (`follow_segments`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from consumer.catalog_channels import CatalogChannelCheck
from consumer.catalog_topic import CatalogFollower, CatalogMetrics
from consumer.routes import EventRoutes, Route
from consumer.segment_triggers import SegmentRefresher
from core.settings import ChannelSettings
from core.signing import SigningKeys
from events.model import CustomerEvent
from journeys.catalog import Catalog, JourneyState
from journeys.expressions import ExpressionMetrics
from journeys.routing import Router, SignalJourney
from journeys.segment_catalog import SegmentCatalog
from store.segments import SegmentStore


@dataclass(frozen=True)
class _Table:
    active: EventRoutes
    inactive: Router
    event_types: frozenset[str]
    position: dict[str, tuple[int, JourneyState]]


class LiveRoutes:
    """An `EventRouter` over the latest catalog; `update` swaps it (the follower's ``on_change``)."""

    def __init__(self, catalog: Catalog, *, expression_metrics: ExpressionMetrics | None = None,
                 refuse: Callable[[Catalog], list[str]] | None = None) -> None:
        self._metrics = expression_metrics
        self._refuse = refuse
        self._table = self._build(catalog)

    def _build(self, catalog: Catalog) -> _Table:
        # A refused journey (`consumer.catalog_channels`) routes like a paused one: no new instance,
        # while instances started before still hear their waits and exits.
        refused = set(self._refuse(catalog)) if self._refuse is not None else set()
        active = EventRoutes([d for d in catalog.definitions(JourneyState.ACTIVE) if d.id not in refused],
                             expression_metrics=self._metrics)
        inactive_definitions = [*catalog.definitions(JourneyState.PAUSED, JourneyState.ARCHIVED),
                                *(d for d in catalog.definitions(JourneyState.ACTIVE) if d.id in refused)]
        listened = frozenset(listener.event_type for d in inactive_definitions
                             for listener in (*d.listeners, *d.exit_events))
        return _Table(active, Router(inactive_definitions, on_error=self._metrics), active.event_types | listened,
                      catalog.position())

    def update(self, catalog: Catalog) -> None:
        self._table = self._build(catalog)

    @property
    def event_types(self) -> frozenset[str]:
        return self._table.event_types

    def position(self) -> dict[str, tuple[int, JourneyState]]:
        """Per journey, the version and state routing follows now."""
        return dict(self._table.position)

    def route(self, event: CustomerEvent) -> list[Route]:
        table = self._table
        routes = table.active.route(event)
        for action in table.inactive.route(event):
            if isinstance(action, SignalJourney) and action not in routes:
                routes.append(action)
        return routes


async def follow_catalog(client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                         registry: CollectorRegistry, timeout_seconds: float = 20.0,
                         expression_metrics: ExpressionMetrics | None = None,
                         channels: ChannelSettings | None = None) -> tuple[LiveRoutes, CatalogFollower]:
    """Reads the catalog to its end and returns routes that the returned follower keeps current.

    Run the follower beside the consumer (``build_consumer_service(background=[follower])``).
    ``keys`` verify every entry (None: unsigned entries are accepted, development only). With
    ``channels``, journeys sending on a channel no provider serves are refused
    (`consumer.catalog_channels.CatalogChannelCheck`: counted, named on readiness, never started).

    Raises:
        CatalogUnavailableError: the catalog cannot be read (a one-line start-up error).
    """
    metrics = CatalogMetrics(registry)
    follower = CatalogFollower(client_config, topic, keys=keys, metrics=metrics)
    check = CatalogChannelCheck(channels, metrics) if channels is not None else None
    if check is not None:
        follower.extra_note = check.note
    routes = LiveRoutes(await follower.load(timeout_seconds), expression_metrics=expression_metrics,
                        refuse=check.refused if check is not None else None)
    follower.on_change = routes.update
    return routes, follower


def follow_segments(follower: CatalogFollower, store: SegmentStore, refresher: SegmentRefresher | None = None) -> None:
    """Makes ``store`` evaluate the catalog's segments instead of files: the set read so far, then each change.

    A change swaps the store's set (so `consumer.routes.SegmentRoutes` and the batches after it use
    the new version at once) and asks ``refresher`` to re-evaluate everyone for the changed segments,
    so members the new condition no longer admits leave, and new members enter, recorded with the new
    version. Call it after the follower's ``load`` and before it runs.
    """
    store.update(follower.segments.segments())

    def changed(segments: SegmentCatalog, changed: frozenset[str]) -> None:
        store.update(segments.segments())
        if refresher is not None:
            refresher.refresh_changed(changed)

    follower.on_segments_change = changed


__all__ = ["LiveRoutes", "follow_catalog", "follow_segments"]
