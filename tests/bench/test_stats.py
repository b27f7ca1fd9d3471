"""Latency percentiles count every produced event; an undelivered one is beyond every percentile."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.common import FAST_POLL_SECONDS, SLOW_POLL_SECONDS, crossing_time, rate_of, wait_for_quiet
from bench.processes import tree_memory_by_process
from bench.stats import (
    growth_ratio,
    interleaved_ratio,
    lasting_growth,
    middle_rate,
    percentile_over_all,
    rate_per_second,
    summarize_latency,
)


def test_all_delivered_is_the_nearest_rank_percentile() -> None:
    latencies = [float(n) for n in range(1, 101)]  # 1 .. 100 s, shuffled order must not matter
    latencies.reverse()
    assert percentile_over_all(latencies, 100, 0.50) == 50.0
    assert percentile_over_all(latencies, 100, 0.99) == 99.0
    assert percentile_over_all(latencies, 100, 1.0) == 100.0


def test_undelivered_events_rank_beyond_every_delivered_one() -> None:
    # 98 of 100 delivered, all fast: p99 falls on an undelivered event, p50 does not.
    delivered = [0.1] * 98
    assert percentile_over_all(delivered, 100, 0.99) == math.inf
    assert percentile_over_all(delivered, 100, 0.98) == 0.1
    assert percentile_over_all(delivered, 100, 0.50) == 0.1


def test_the_old_bug_percentiles_over_delivered_only_understate_the_tail() -> None:
    """2 425 produced, 111 delivered: the old benchmark reported p99 over the 111 alone."""
    delivered = [float(n) / 10 for n in range(1, 112)]  # 0.1 .. 11.1 s
    over_delivered_only = percentile_over_all(delivered, len(delivered), 0.99)
    assert over_delivered_only == pytest.approx(11.0)  # finite: what the old figure claimed
    summary = summarize_latency(delivered, 2425)
    assert summary.percentile(0.50) == math.inf
    assert summary.percentile(0.99) == math.inf
    assert summary.delivered_fraction == pytest.approx(111 / 2425)
    assert summary.as_json()["p99_seconds"] is None
    assert summary.as_json()["p50_seconds"] is None


def test_half_delivered_puts_the_median_on_the_last_delivered_event() -> None:
    assert percentile_over_all([3.0, 1.0, 2.0], 6, 0.50) == 3.0
    assert percentile_over_all([3.0, 1.0, 2.0], 7, 0.50) == math.inf


def test_nothing_produced_or_delivered() -> None:
    assert percentile_over_all([], 0, 0.5) == math.inf
    assert percentile_over_all([], 10, 0.01) == math.inf


def test_more_delivered_than_produced_is_an_error() -> None:
    with pytest.raises(ValueError, match="delivered"):
        percentile_over_all([1.0, 2.0], 1, 0.5)


@given(st.lists(st.floats(min_value=0, max_value=1e4), max_size=50), st.integers(min_value=0, max_value=50),
       st.sampled_from([0.5, 0.95, 0.99]))
def test_a_percentile_is_finite_exactly_when_its_rank_was_delivered(delivered: list[float], undelivered: int,
                                                                     fraction: float) -> None:
    produced = len(delivered) + undelivered
    value = percentile_over_all(delivered, produced, fraction)
    rank = max(1, math.ceil(fraction * produced))
    assert math.isinf(value) == (produced == 0 or rank > len(delivered))
    if not math.isinf(value):
        assert value in delivered
        # counting the undelivered events never makes a percentile look better than over delivered only
        assert value >= percentile_over_all(delivered, len(delivered), fraction)


def test_rate_counts_intervals_after_the_first_event() -> None:
    assert rate_per_second([10.0, 10.5, 11.0]) == pytest.approx(2.0)
    assert rate_per_second([5.0]) == 0.0


def test_the_middle_rate_leaves_out_a_slow_start_and_a_straggler() -> None:
    # 100 completions 0.1 s apart, the first 5 slowed to 2 s apart and one straggler 30 s after the rest.
    steady = [10.0 + 0.1 * n for n in range(94)]
    timestamps = [2.0 * n for n in range(5)] + steady + [steady[-1] + 30.0]
    assert rate_per_second(timestamps) < 2.5  # first to last: dominated by both ends
    assert middle_rate(timestamps) == pytest.approx(10.0)
    assert middle_rate([1.0, 2.0, 3.0]) == rate_per_second([1.0, 2.0, 3.0])  # too few to leave any out
    assert middle_rate([4.0]) == 0.0


def test_growth_ratio_compares_first_and_last_tenth_after_warm_up() -> None:
    samples = [50.0] * 10 + [100.0] * 40 + [110.0] * 50
    start, end, growth = growth_ratio(samples)
    assert (start, end) == (100.0, 110.0)
    assert growth == pytest.approx(0.10)


def test_postgresql_memory_keeps_its_shared_buffer_cache_apart() -> None:
    members = tree_memory_by_process(os.getpid())
    total, shared = members[os.getpid()]
    assert total > 0 and 0 <= shared <= total


def test_a_process_forked_late_in_the_soak_is_not_growth_but_a_lasting_one_growing_is() -> None:
    steady = [{1: 10.0, 2: 6.0}] * 90 + [{1: 10.0, 2: 6.0, 3: 6.0}] * 10  # a new backend in the last tenth
    pool_grew = lasting_growth(steady)
    assert (pool_grew.lasting, pool_grew.processes_start, pool_grew.processes_end) == (2, 2, 3)
    assert pool_grew.growth == 0.0
    assert growth_ratio([sum(sample.values()) for sample in steady])[2] > 0.10  # what the whole tree's sum said

    leaking = [{1: 10.0, 2: 6.0 + index / 10} for index in range(100)]
    assert lasting_growth(leaking).growth > 0.10

    # A backend that ends inside a window is left out of both windows, not counted as a fall.
    ended = [{1: 10.0, 2: 6.0, 3: 6.0}] * 95 + [{1: 10.0, 2: 6.0}] * 5
    assert lasting_growth(ended).growth == 0.0 and lasting_growth(ended).lasting == 2


class _SteadyCounter:
    """A counter rising at ``rate`` per second from ``begins_at`` on a fake clock that `sleep` advances."""

    def __init__(self, rate: float, begins_at: float, stops_at: float = float("inf")) -> None:
        self.now = 0.0
        self.rate = rate
        self.begins_at = begins_at
        self.stops_at = stops_at
        self.reads = 0

    async def read(self) -> float:
        self.reads += 1
        return float(min(self.stops_at, int(max(0.0, self.now - self.begins_at) * self.rate)))

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_rate_of_a_steady_counter_is_its_rate_with_few_reads_of_the_measured_process() -> None:
    counter = _SteadyCounter(rate=300.0, begins_at=0.52)

    rate = await rate_of(counter.read, 4000, "steady", 600.0, clock=lambda: counter.now, sleep=counter.sleep)

    # Window: opened within half a fast poll of the first increment, closed at the interpolated crossing.
    assert rate == pytest.approx(300.0, rel=0.01)
    # 13.3 s of counting: about 11 fast reads before it, then a read every 2 s while the end is far
    # and closer ones as it nears, not 267 at the fast rate.
    assert counter.reads <= 13.4 / SLOW_POLL_SECONDS + 0.52 / FAST_POLL_SECONDS + 10


async def test_a_counter_that_stops_at_its_target_is_read_within_a_fast_poll_of_its_end() -> None:
    # The measured processes' counters stop at the target: the window closes at the first read after it.
    counter = _SteadyCounter(rate=300.0, begins_at=0.52, stops_at=4000)

    rate = await rate_of(counter.read, 4000, "stops", 600.0, clock=lambda: counter.now, sleep=counter.sleep)

    assert 4000 / (4000 / 300.0 + FAST_POLL_SECONDS * 1.5) <= rate <= 300.0 * 1.01


def test_the_crossing_is_interpolated_between_the_reads_around_it() -> None:
    assert crossing_time((10.0, 100.0), (10.5, 200.0), 150.0) == pytest.approx(10.25)
    assert crossing_time((10.0, 100.0), (10.5, 200.0), 200.0) == pytest.approx(10.5)
    assert crossing_time((10.0, 100.0), (10.5, 100.0), 100.0) == pytest.approx(10.0)


async def test_the_bench_waits_for_the_server_to_go_quiet_and_not_forever() -> None:
    clock = _SteadyCounter(rate=0.0, begins_at=0.0)  # only its fake clock and sleep
    busy_until = 5.0  # the server persists a left-over backlog at one core for 5 s, then idles

    def cpu_seconds() -> float:
        return min(clock.now, busy_until) + 0.01 * clock.now

    waited = await wait_for_quiet(cpu_seconds, clock=lambda: clock.now, sleep=clock.sleep)
    never = await wait_for_quiet(lambda: clock.now, timeout_seconds=10.0, clock=lambda: clock.now, sleep=clock.sleep)

    assert waited == pytest.approx(6.0)  # the first whole quiet window ends at 6 s
    assert never == pytest.approx(10.0)


def test_each_round_is_compared_with_the_ceiling_either_side_of_it() -> None:
    # A ceiling that drifts down over the run: each round is paired with the readings around it.
    figures = interleaved_ratio([90.0, 60.0, 80.0], [100.0, 100.0, 80.0, 80.0])
    assert figures.ratios == pytest.approx((0.9, 60 / 90, 1.0))
    assert figures.ratio == pytest.approx(0.9)  # the median round, not the mean (0.856)
    assert figures.measured_median == 80.0
    assert figures.ceiling_mean == 90.0


def test_one_round_is_its_own_median() -> None:
    figures = interleaved_ratio([50.0], [100.0, 0.0])
    assert figures.ratio == pytest.approx(1.0)


@pytest.mark.parametrize(("measured", "ceilings"), [([], [100.0]), ([1.0], [1.0]), ([1.0, 2.0], [1.0, 2.0])])
def test_rounds_need_one_more_ceiling_reading(measured: list[float], ceilings: list[float]) -> None:
    with pytest.raises(ValueError, match="ceiling readings"):
        interleaved_ratio(measured, ceilings)


@given(st.lists(st.floats(1, 1e4), min_size=1, max_size=7).flatmap(
    lambda rounds: st.tuples(st.just(rounds), st.lists(st.floats(1, 1e4), min_size=len(rounds) + 1,
                                                       max_size=len(rounds) + 1))),
       st.floats(0.01, 100))
def test_the_ratio_is_one_of_the_rounds_and_ignores_units(readings: tuple[list[float], list[float]],
                                                          scale: float) -> None:
    measured, ceilings = readings
    figures = interleaved_ratio(measured, ceilings)
    assert min(figures.ratios) <= figures.ratio <= max(figures.ratios)
    scaled = interleaved_ratio([m * scale for m in measured], [c * scale for c in ceilings])
    assert scaled.ratio == pytest.approx(figures.ratio, rel=1e-9)
