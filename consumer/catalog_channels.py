"""Which channels catalog journeys send on, and refusing those no provider serves (fail closed).

Outside development mode a journey that sends on a channel whose provider is the outbox (a local
file) is refused wherever it is met: ``eventflow journeys publish`` does not publish it, a consumer
starts no instance of it (it routes like a paused journey: running instances still hear their
events), and a worker fails its sends on that channel as ``ChannelUnavailable``. Each process
counts a refused version once (``eventflow_catalog_invalid_entries_total{reason="channel_unserved"}``)
and names it on readiness.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import structlog

from consumer.catalog_topic import CatalogMetrics
from core.settings import ChannelSettings
from core.vocabulary import CHANNELS
from journeys import JourneyDefinition
from journeys.catalog import Catalog, JourneyState

log = structlog.get_logger(__name__)


def _send_channels(node: Any) -> Iterator[str]:
    match node:
        case {"send": {"channel": str(channel), **send}}:
            yield channel
            fallback = send.get("fallback")
            if isinstance(fallback, str):
                yield fallback
            yield from (c for value in node.values() for c in _send_channels(value))
        case dict():
            yield from (c for value in node.values() for c in _send_channels(value))
        case list():
            yield from (c for item in node for c in _send_channels(item))


def journey_channels(definitions: Iterable[JourneyDefinition]) -> frozenset[str]:
    """Every channel the journeys can send on: send steps' channels and fallbacks, and their templates'.

    Read from each definition's snapshot (the JSON a journey instance starts with), so nested steps
    (branches, splits, digests) are covered whatever their shape; a template's channels are counted
    too, which errs towards "used" when failing closed.
    """
    used: set[str] = set()
    for definition in definitions:
        snapshot = definition.snapshot()
        used.update(_send_channels(snapshot["steps"]))
        for template in snapshot["templates"].values():
            used.update(template["variants"])
    return frozenset(used)


def unserved_channels(definition: JourneyDefinition, channels: ChannelSettings) -> tuple[str, ...]:
    """The channels ``definition`` sends on that no provider serves outside development mode."""
    if channels.dev_mode:
        return ()
    return tuple(sorted(c for c in journey_channels([definition]) & set(CHANNELS) if channels.provider(c) == "outbox"))


class CatalogChannelCheck:
    """Refuses catalog journeys that send on a channel without a provider (outside development mode).

    Failing start-up on one would let a single publish stop every process. So each such journey
    version is refused once: logged (``catalog_journey_refused``) and counted
    (``eventflow_catalog_invalid_entries_total{reason="channel_unserved"}``); a consumer starts no
    instance of it, and a worker fails its sends on that channel as ``ChannelUnavailable``
    (`activities.outbox.UnavailableChannel`), never reaching a file.
    """

    REASON = "channel_unserved"

    def __init__(self, channels: ChannelSettings, metrics: CatalogMetrics) -> None:
        self._channels = channels
        self._metrics = metrics
        self._refused: set[tuple[str, int]] = set()
        self._now: list[str] = []
        metrics.invalid_entries.labels(self.REASON)

    def __call__(self, catalog: Catalog) -> None:
        """Logs and counts every newly refused journey version (the follower's ``on_change``)."""
        self.refused(catalog)

    def refused(self, catalog: Catalog) -> list[str]:
        """Logs and counts every newly refused journey version; returns the ids of all refused now."""
        refused: list[str] = []
        self._now = refused
        for definition in catalog.definitions(*JourneyState):
            unserved = unserved_channels(definition, self._channels)
            if not unserved:
                continue
            refused.append(definition.id)
            if (definition.id, definition.version) in self._refused:
                continue
            self._refused.add((definition.id, definition.version))
            self._metrics.invalid_entries.labels(self.REASON).inc()
            log.error("catalog_journey_refused", journey_id=definition.id, version=definition.version,
                      channels=list(unserved), reason=self.REASON,
                      hint=f"set {', '.join(ChannelSettings.variable(f'{c}_provider') for c in unserved)}; "
                           "its sends on these channels fail as ChannelUnavailable")
        return refused

    def note(self) -> str | None:
        """What readiness shows: the journeys refused now, or None."""
        if not self._now:
            return None
        shown = ", ".join(self._now[:5]) + (f" (+{len(self._now) - 5} more)" if len(self._now) > 5 else "")
        return f"journeys refused, no provider serves a channel they send on: {shown}"
