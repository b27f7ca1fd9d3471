"""The provider circuit breaker: closed, open after consecutive failures, one probe when half-open."""

from __future__ import annotations

from activities.circuit import CircuitBreaker, CircuitPolicy, CircuitState


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_lets_one_probe_through_after_the_open_time() -> None:
    clock, seen = _Clock(), list[CircuitState]()
    breaker = CircuitBreaker(CircuitPolicy(failure_threshold=2, open_seconds=10.0), on_change=seen.append, clock=clock)
    assert breaker.allow()
    breaker.failed()
    breaker.succeeded()  # a success in between resets the count
    breaker.failed()
    assert breaker.state is CircuitState.CLOSED
    breaker.failed()
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    assert breaker.seconds_until_probe() == 10.0

    clock.now += 10.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow(), "the probe"
    assert not breaker.allow(), "one probe at a time"
    breaker.failed()
    assert breaker.state is CircuitState.OPEN, "a failed probe opens it again, for the full time"
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED and breaker.allow() and breaker.allow()
    assert seen == [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.OPEN,
                    CircuitState.HALF_OPEN, CircuitState.CLOSED]
    assert [state.gauge_value for state in CircuitState] == [0, 1, 2]


def test_a_probe_without_a_verdict_frees_the_slot_for_the_next() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(CircuitPolicy(failure_threshold=1, open_seconds=1.0), clock=clock)
    breaker.failed()
    clock.now += 1.0
    assert breaker.allow()
    breaker.released()  # the call was never made (the lease ran out first)
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allow()
