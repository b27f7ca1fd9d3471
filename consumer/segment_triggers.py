"""Starts and exits the journeys a segment entry or exit triggers, from the store's change log.

Membership changes are committed with ``dispatched = false`` (store/segments.py); this loop, one
per consumer, claims the oldest with ``SKIP LOCKED``, routes each as a ``SegmentEntered`` or
``SegmentLeft`` event through the same router and dispatcher as Kafka events, and marks them
dispatched in the same transaction. A crash between the start and the mark redoes the start,
which Temporal refuses as a duplicate id (the journey's ``once_per_key`` on ``payload.entry``), so
each entry starts its journeys once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from datetime import timedelta
from typing import Protocol

import asyncpg
import structlog

from consumer.dispatch import Dispatcher
from consumer.routes import Route
from core.ids import join_id
from events.model import Customer, CustomerEvent
from journeys.routing import Action
from journeys.segment_events import SEGMENT_ENTERED, SEGMENT_LEFT, segment_payload
from store.segments import Change, PendingChange, SegmentStore, dispatch_pending

log = structlog.get_logger(__name__)


class _Router(Protocol):
    def route(self, event: CustomerEvent) -> list[Route]: ...


def segment_event(change: PendingChange) -> CustomerEvent:
    """The event a journey sees for one entry or exit (its id is stable, so a redo is the same event)."""
    return CustomerEvent(
        event_id=join_id("segment", change.segment_id, str(change.id)),
        event_type=SEGMENT_ENTERED if change.change is Change.ENTERED else SEGMENT_LEFT,
        occurred_at=change.at.isoformat(),
        customer=Customer(id=change.customer_id, timezone=change.timezone or "UTC", locale=change.locale or "en"),
        payload=segment_payload(change.segment_id, change.version, change.entry_id))


class SegmentTriggers:
    """The consumer's background loop over pending segment changes; never dies, reports while failing."""

    def __init__(self, pool: asyncpg.Pool, router: _Router, dispatcher: Dispatcher, *,
                 idle_seconds: float = 1.0, backoff_seconds: float = 5.0) -> None:
        self._pool = pool
        self._router = router
        self._dispatcher = dispatcher
        self._idle = idle_seconds
        self._backoff = backoff_seconds
        self._failing: str | None = None
        self.dispatched = 0

    @property
    def name(self) -> str:
        return "segment_triggers"

    def problem(self) -> str | None:
        return None  # a failing trigger loop retries; the consumer itself can still serve events

    def note(self) -> str | None:
        return self._failing

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await dispatch_pending(self._pool, self._apply)
                self._failing = None
            except Exception as exc:  # noqa: BLE001 - Temporal or the store is down: retried after a pause
                self._failing = f"segment triggers retrying: {type(exc).__name__}"
                log.warning("segment_triggers_failed", error_type=type(exc).__name__)
                handled = 0
                await self._pause(stop, self._backoff)
                continue
            self.dispatched += handled
            if not handled:
                await self._pause(stop, self._idle)

    async def _apply(self, changes: list[PendingChange]) -> None:
        for change in changes:
            event = segment_event(change)
            for route in self._router.route(event):
                if not isinstance(route, Action):
                    continue  # profile and consent routes: the store already holds this customer's state
                outcome = await self._dispatcher.apply(event, route)
                log.info(f"journey_{outcome.value}", event_id=event.event_id, workflow_id=route.workflow_id)

    @staticmethod
    async def _pause(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


class SegmentRefresher:
    """Re-evaluates every customer's segments every ``interval_seconds`` (conditions the clock alone
    changes: ``within``, ``not_within``, counts in a window); one consumer refreshes at a time.

    After each full refresh the same one consumer prunes the events segments read that are older than
    ``retention`` (`SegmentStore.prune_if_leader`; None: never), so ``customer_events`` stops growing.

    `refresh_changed` (a new version from the live catalog) re-evaluates everyone for just those
    segments at once, retried every ``retry_seconds`` while another consumer holds the refresh, so
    members the new condition no longer admits leave (and new ones enter) without waiting a period.
    """

    def __init__(self, store: SegmentStore, interval_seconds: float, *, retry_seconds: float = 1.0,
                 retention: timedelta | None = None) -> None:
        self._store = store
        self._interval = interval_seconds
        self._retention = retention
        self._retry = retry_seconds
        self._failing: str | None = None
        #: Segments to re-evaluate, each with the number of the request that named it last: a request
        #: made while a refresh runs is not cleared by it (the refresh may have read the older version).
        self._changed: dict[str, int] = {}
        self._requests = 0
        self._wake = asyncio.Event()

    @property
    def name(self) -> str:
        return "segment_refresh"

    def problem(self) -> str | None:
        return None

    def note(self) -> str | None:
        return self._failing

    def refresh_changed(self, segment_ids: Collection[str]) -> None:
        """Asks for everyone to be re-evaluated for ``segment_ids`` now; called on the event loop."""
        self._requests += 1
        self._changed.update(dict.fromkeys(segment_ids, self._requests))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self._interval
        while not stop.is_set():
            wait = max(0.0, next_full - loop.time())
            if self._changed and not self._wake.is_set():
                wait = min(wait, self._retry)  # a targeted refresh another consumer's refresh held off
            await self._until(stop, wait)
            if stop.is_set():
                return
            self._wake.clear()
            full = loop.time() >= next_full
            pending = dict(self._changed)
            only = None if full else frozenset(pending)
            if full:
                next_full = loop.time() + self._interval
            elif not only:
                continue
            try:
                changes = await self._store.refresh_if_leader(only=only)
                self._failing = None
            except Exception as exc:  # noqa: BLE001 - the store is down: the next round tries again
                self._failing = f"segment refresh retrying: {type(exc).__name__}"
                log.warning("segment_refresh_failed", error_type=type(exc).__name__)
                continue
            if changes is not None:
                for segment_id, request in pending.items():
                    if self._changed.get(segment_id) == request:
                        del self._changed[segment_id]
                log.info("segments_refreshed", changes=len(changes), segments=sorted(only) if only else "all")
                if full and self._retention is not None:
                    await self._prune(self._retention)

    async def _prune(self, retention: timedelta) -> None:
        try:
            pruned = await self._store.prune_if_leader(retention)
        except Exception as exc:  # noqa: BLE001 - the store is down: the next full round prunes
            self._failing = f"segment event pruning retrying: {type(exc).__name__}"
            log.warning("customer_events_prune_failed", error_type=type(exc).__name__)
            return
        if pruned is not None:
            log.info("customer_events_pruned", events=pruned, kept_days=self._store.kept_for(retention).days)

    async def _until(self, stop: asyncio.Event, seconds: float) -> None:
        """Waits ``seconds``, or less if stopped or woken by `refresh_changed`."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
