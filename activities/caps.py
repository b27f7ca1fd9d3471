"""Rolling frequency caps and journey priority: the grammar, the window arithmetic and the decision.

Pure functions over dates and plain values (no Temporal, no clock), so the customer's
``CustomerPreferences`` workflow can decide deterministically and the rules can be proven with
hypothesis (tests/activities/test_caps.py). docs/architecture.md ("Rolling frequency caps and
journey priority") gives the rules; in short:

* A cap is ``scope:window=limit``: ``scope`` a channel or ``all`` (every channel together),
  ``window`` ``day``, ``week`` or ``month``. Windows are *rolling in local days*: ``day`` is the
  customer's local calendar day today, ``week`` the last 7 local days including today, ``month``
  the last 30. A send counts on the local day it was reserved.
* Text form (the ``EVENTFLOW_CAPS`` setting, a journey's or a send's ``caps``):
  ``"email:day=2,week=5;all:month=20"``. A more specific source overrides per (scope, window); a
  limit of 0 lifts that cap.
* Priority: ``transactional`` passes every cap and uses no slot; otherwise ``high`` > ``normal``
  (default) > ``low``. A send of a priority ``k`` levels below ``high`` may take a slot only while
  ``reserve * k`` slots stay free for the levels above it: it sees the limit ``max(1, limit -
  reserve * k)``. So the last ``reserve`` slots of a window go to ``high`` sends only, whoever asks
  first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from core.vocabulary import CHANNELS

#: Every scope a cap may name: a channel, or all channels together.
ALL_CHANNELS = "all"
SCOPES = (*CHANNELS, ALL_CHANNELS)
#: Slots each priority level keeps free for the levels above it, unless configured otherwise.
DEFAULT_RESERVE = 1


class CapSpecError(ValueError):
    """A caps text that does not follow the grammar; the message says which part and why."""


class Window(StrEnum):
    """A rolling window of local days ending today."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def days(self) -> int:
        return _WINDOW_DAYS[self]

    def first_day(self, today: date) -> date:
        """The oldest local day inside the window that ends on ``today``."""
        return today - timedelta(days=self.days - 1)


_WINDOW_DAYS = {Window.DAY: 1, Window.WEEK: 7, Window.MONTH: 30}


class Priority(StrEnum):
    """How a journey's sends compete for cap slots."""

    TRANSACTIONAL = "transactional"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def of(cls, text: str | None) -> Priority:
        """The priority named by ``text``; ``normal`` for empty or unknown text (requests from before priorities)."""
        try:
            return cls(text) if text else cls.NORMAL
        except ValueError:
            return cls.NORMAL

    @property
    def levels_below_high(self) -> int:
        return _LEVELS_BELOW_HIGH.get(self, 0)


_LEVELS_BELOW_HIGH = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


@dataclass(frozen=True, order=True)
class CapLimit:
    """At most ``limit`` sends in ``scope`` within ``window`` (0: no cap)."""

    scope: str
    window: Window
    limit: int

    def __str__(self) -> str:
        return f"{self.scope}:{self.window}={self.limit}"

    def applies_to(self, channel: str) -> bool:
        return self.scope in (ALL_CHANNELS, channel)

    def limit_for(self, priority: Priority, reserve: int) -> int:
        """The slots ``priority`` may use: the limit less what is kept for higher levels, at least one."""
        return max(1, self.limit - max(reserve, 0) * priority.levels_below_high)


_ITEM = re.compile(r"^\s*(?P<window>[a-z]+)\s*=\s*(?P<limit>\d+)\s*$")


@dataclass(frozen=True)
class CapSet:
    """A set of caps, at most one per (scope, window), kept sorted so its text form is canonical."""

    limits: tuple[CapLimit, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CapSet:
        """Reads ``"email:day=2,week=5;all:month=20"``; `CapSpecError` names the offending part."""
        found: dict[tuple[str, Window], CapLimit] = {}
        for group in (g.strip() for g in text.split(";")):
            if not group:
                continue
            scope, sep, items = group.partition(":")
            scope = scope.strip()
            if not sep or scope not in SCOPES:
                raise CapSpecError(f"{group!r}: starts with a scope, one of {', '.join(SCOPES)}, then ':'")
            for item in items.split(","):
                match = _ITEM.match(item)
                if match is None:
                    raise CapSpecError(f"{group!r}: {item.strip()!r} is not window=limit (e.g. week=5)")
                try:
                    window = Window(match["window"])
                except ValueError:
                    raise CapSpecError(f"{group!r}: unknown window {match['window']!r}; use day, week or month") \
                        from None
                if (scope, window) in found:
                    raise CapSpecError(f"{scope}:{window} is given twice")
                found[(scope, window)] = CapLimit(scope, window, int(match["limit"]))
        return cls(tuple(sorted(found.values())))

    @classmethod
    def of(cls, limits: Iterable[CapLimit]) -> CapSet:
        """The set of ``limits``; a later limit for the same (scope, window) replaces an earlier one."""
        return cls(tuple(sorted({(c.scope, c.window): c for c in limits}.values())))

    def __str__(self) -> str:
        groups: dict[str, list[str]] = {}
        for cap in self.limits:
            groups.setdefault(cap.scope, []).append(f"{cap.window}={cap.limit}")
        return ";".join(f"{scope}:{','.join(items)}" for scope, items in groups.items())

    def overridden_by(self, other: CapSet) -> CapSet:
        """These caps with ``other``'s replacing them per (scope, window); a 0 in ``other`` lifts that cap."""
        return CapSet.of((*self.limits, *other.limits))

    def active(self) -> tuple[CapLimit, ...]:
        return tuple(cap for cap in self.limits if cap.limit > 0)


@dataclass(frozen=True)
class CountedSend:
    """A send that holds a cap slot: its channel and the customer's local day when it was reserved."""

    channel: str
    local_day: date


@dataclass(frozen=True)
class CapVerdict:
    """Whether one send may take a slot now.

    Attributes:
        allowed: it may.
        blocking: the caps it would exceed (at its priority), none when allowed.
        frees_on: the first later local day on which every blocking cap has a slot for it again,
            assuming no other send is made meanwhile (for ``on_cap: defer``).
    """

    allowed: bool
    blocking: tuple[CapLimit, ...] = ()
    frees_on: date | None = None


def used_in_window(cap: CapLimit, sends: Iterable[CountedSend], today: date) -> int:
    """The sends counted against ``cap`` in its window ending ``today``.

    A send dated after ``today`` (the customer moved west a timezone since) counts too: it was made
    inside the window, whichever clock dated it.
    """
    start = cap.window.first_day(today)
    return sum(1 for s in sends if cap.applies_to(s.channel) and s.local_day >= start)


def decide(caps: CapSet, channel: str, priority: Priority, today: date, sends: Iterable[CountedSend], *,
           reserve: int = DEFAULT_RESERVE, first_come: Iterable[CapLimit] = ()) -> CapVerdict:
    """May a ``priority`` send on ``channel`` take a slot on local day ``today``, given the ``sends`` so far?

    ``first_come`` are caps without the priority rule (the legacy ``daily_cap``): every priority but
    transactional sees their whole limit.
    """
    if priority is Priority.TRANSACTIONAL:
        return CapVerdict(True)
    counted = list(sends)
    applicable = [(cap, cap.limit_for(priority, reserve)) for cap in caps.active() if cap.applies_to(channel)]
    applicable += [(cap, cap.limit) for cap in first_come if cap.limit > 0 and cap.applies_to(channel)]
    blocking = [(cap, allowed) for cap, allowed in applicable if used_in_window(cap, counted, today) >= allowed]
    if not blocking:
        return CapVerdict(True)
    return CapVerdict(False, tuple(cap for cap, _ in blocking),
                      max(_frees_on(cap, allowed, counted, today) for cap, allowed in blocking))


def _frees_on(cap: CapLimit, allowed: int, sends: list[CountedSend], today: date) -> date:
    """The first day after ``today`` whose window of ``cap`` holds fewer than ``allowed`` sends."""
    latest = max((s.local_day for s in sends if cap.applies_to(s.channel)), default=today)
    day = today + timedelta(days=1)
    # Counts only fall as the window moves on; a window past the latest send holds none.
    while day <= max(latest, today) + timedelta(days=cap.window.days):
        if used_in_window(cap, sends, day) < allowed:
            return day
        day += timedelta(days=1)
    return day


def legacy_daily_cap(caps: CapSet, channel: str, daily_cap: int) -> tuple[CapLimit, ...]:
    """The per-channel ``daily_cap`` (``EVENTFLOW_DAILY_CAP``, a step's ``daily_cap``) as a first-come cap.

    Empty when there is no daily cap, or when ``caps`` caps the channel per day itself (that cap,
    with its priority rule, replaces it).
    """
    if daily_cap <= 0 or any(c.scope == channel and c.window is Window.DAY for c in caps.active()):
        return ()
    return (CapLimit(channel, Window.DAY, daily_cap),)
