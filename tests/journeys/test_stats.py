"""The report's statistics: Wilson and Newcombe intervals, their invariants and known values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeys.stats import Rate, compare, wilson


@st.composite
def rates(draw: st.DrawFn) -> Rate:
    trials = draw(st.integers(min_value=1, max_value=100_000))
    return Rate(draw(st.integers(min_value=0, max_value=trials)), trials)


@given(rates())
def test_wilson_interval_holds_the_rate_and_stays_in_zero_one(rate: Rate) -> None:
    interval = wilson(rate.successes, rate.trials)
    assert 0.0 <= interval.low <= rate.successes / rate.trials <= interval.high <= 1.0
    assert interval.high - interval.low > 0


@given(rates(), st.integers(min_value=2, max_value=50))
def test_more_data_at_the_same_rate_narrows_the_interval(rate: Rate, factor: int) -> None:
    small = wilson(rate.successes, rate.trials)
    large = wilson(rate.successes * factor, rate.trials * factor)
    assert large.high - large.low <= small.high - small.low + 1e-12


@given(rates(), rates())
def test_the_difference_interval_holds_the_difference_and_is_antisymmetric(arm: Rate, baseline: Rate) -> None:
    forward, backward = compare(arm, baseline), compare(baseline, arm)
    assert forward is not None and backward is not None
    assert -1.0 <= forward.interval.low <= forward.difference <= forward.interval.high <= 1.0
    assert math.isclose(forward.difference, -backward.difference, abs_tol=1e-12)
    assert math.isclose(forward.interval.low, -backward.interval.high, abs_tol=1e-9)
    assert math.isclose(forward.interval.high, -backward.interval.low, abs_tol=1e-9)
    if baseline.successes:
        assert forward.lift is not None
        assert math.isclose(forward.lift, forward.difference / (baseline.successes / baseline.trials))
    else:
        assert forward.lift is None


def test_known_values() -> None:
    # Wilson (1927) for 81/263: the textbook example in Newcombe (1998), Table I: 0.2553 to 0.3662.
    interval = wilson(81, 263)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)
    # Newcombe (1998) example (56/70 vs 48/80): difference 0.2, method 10 interval 0.0524 to 0.3339.
    comparison = compare(Rate(56, 70), Rate(48, 80))
    assert comparison is not None
    assert (round(comparison.interval.low, 4), round(comparison.interval.high, 4)) == (0.0524, 0.3339)
    assert comparison.lift is not None and math.isclose(comparison.lift, 0.2 / 0.6)


def test_empty_groups_have_no_rate_and_bad_counts_are_refused() -> None:
    assert Rate(0, 0).value is None and Rate(0, 0).interval is None
    assert compare(Rate(0, 0), Rate(1, 2)) is None
    with pytest.raises(ValueError):
        Rate(3, 2)
