"""A circuit breaker per provider: stop calling a provider that keeps failing, probe it now and then.

One breaker per (channel, provider) per worker process. It only decides whether a provider is
*worth calling*; whether a send may move to another provider is the send activity's decision, taken
on the ledger (docs/architecture.md, "Provider failover"). A breaker that is wrong costs a skipped or
a wasted call, never a second provider for one send.

States: ``closed`` (calls go through; ``failure_threshold`` consecutive unavailable answers open it),
``open`` (no calls for ``open_seconds``), then ``half_open`` (one probe call at a time: its success
closes the breaker, its failure opens it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    """A breaker's state; `gauge_value` is how the metric shows it."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 half-open, 2 open: higher is worse, so a dashboard can colour thresholds."""
        return _GAUGE[self]


_GAUGE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


@dataclass(frozen=True)
class CircuitPolicy:
    """When a breaker opens and how long it stays open.

    Attributes:
        failure_threshold: consecutive unavailable answers (5xx, 429, timeouts, connection errors)
            that open a closed breaker.
        open_seconds: how long an open breaker refuses calls before it lets one probe through.
    """

    failure_threshold: int = 5
    open_seconds: float = 30.0


class CircuitBreaker:
    """One provider's breaker; not thread-safe (it lives on the worker's event loop)."""

    def __init__(self, policy: CircuitPolicy, *, on_change: Callable[[CircuitState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._on_change = on_change
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        if on_change is not None:
            on_change(self._state)

    @property
    def state(self) -> CircuitState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self._policy.open_seconds:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def seconds_until_probe(self) -> float:
        """How long until an open breaker lets a probe through (0 unless open)."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._policy.open_seconds - self._clock())

    def allow(self) -> bool:
        """Whether to call the provider now; in half-open, True for the one probe only.

        A caller told True must report the call's end with `succeeded`, `failed` or `released`.
        """
        match self.state:
            case CircuitState.CLOSED:
                return True
            case CircuitState.HALF_OPEN:
                if self._probing:
                    return False
                self._probing = True
                return True
            case CircuitState.OPEN:
                return False

    def succeeded(self) -> None:
        """The provider answered (accepted, or refused the message itself): it is available."""
        self._failures = 0
        self._probing = False
        self._set(CircuitState.CLOSED)

    def failed(self) -> None:
        """The provider was unavailable (5xx, 429, timeout, connection error)."""
        self._probing = False
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self._policy.failure_threshold:
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    def released(self) -> None:
        """An allowed call was not made, or ended without a verdict on the provider (cancelled)."""
        self._probing = False

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
