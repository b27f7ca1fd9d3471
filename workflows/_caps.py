"""The preferences workflow's cap gate: its ledger and one `ReserveRequest` in, a verdict out.

Glue between the ledger's entries and the pure rules of `activities.caps`, in the customer's
calendar (`workflows._calendar`). No Temporal imports, so it is deterministic and testable alone;
workflows import it passed through the sandbox (for the same ``zoneinfo`` reason as `_calendar`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Protocol

from activities.caps import CapSet, CapSpecError, CountedSend, Priority, decide, legacy_daily_cap
from activities.ledger import Reservation, ReserveRequest
from activities.outcomes import LedgerState, ReserveDecision
from workflows._calendar import local_day, start_of_local_day


class CountedEntry(Protocol):
    """What the gate reads of a ledger entry."""

    @property
    def channel(self) -> str: ...
    @property
    def local_day(self) -> str: ...
    @property
    def state(self) -> LedgerState: ...
    @property
    def priority(self) -> str: ...


def counted_sends(entries: Iterable[CountedEntry]) -> list[CountedSend]:
    """The entries that hold a slot: not failed permanently, not transactional, with a readable day."""
    sends = []
    for entry in entries:
        if not entry.state.holds_cap_slot or Priority.of(entry.priority) is Priority.TRANSACTIONAL:
            continue
        try:
            day = date.fromisoformat(entry.local_day)
        except ValueError:
            continue
        sends.append(CountedSend(entry.channel, day))
    return sends


def cap_gate(request: ReserveRequest, entries: Iterable[CountedEntry], now: datetime) -> Reservation | None:
    """None when the send may take a slot now; else ``capped``, or ``defer`` to the local midnight it frees."""
    try:
        caps = CapSet.parse(request.caps)
    except CapSpecError:
        # The activity writes this text from a parsed set, so this is a foreign client: fail closed.
        return Reservation(ReserveDecision.CAPPED, capped_by="invalid")
    today = date.fromisoformat(local_day(now, request.timezone))
    verdict = decide(caps, request.channel, Priority.of(request.priority), today, counted_sends(entries),
                     reserve=request.cap_reserve,
                     first_come=legacy_daily_cap(caps, request.channel, request.daily_cap))
    if verdict.allowed:
        return None
    # The longest blocking window names the cap (one label value per send, for the metric).
    widest = max(verdict.blocking, key=lambda cap: cap.window.days)
    capped_by = f"{widest.scope}:{widest.window}"
    if request.on_cap == "defer" and verdict.frees_on is not None:
        return Reservation(ReserveDecision.DEFER, capped_by=capped_by,
                           not_before=start_of_local_day(verdict.frees_on, request.timezone).isoformat())
    return Reservation(ReserveDecision.CAPPED, capped_by=capped_by)
