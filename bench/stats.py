"""Pure figures of a benchmark phase: latency percentiles over every produced event, and rates.

An event that was produced but never delivered is not missing data: it is the slowest event of
all. Percentiles are therefore taken over every produced event, with the undelivered ones ranked
beyond every delivered latency; a percentile that falls on them is infinite (``None`` in the JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import TypeVar

#: The percentiles every latency phase reports.
PERCENTILES = (0.50, 0.95, 0.99)


def percentile_over_all(delivered_seconds: Sequence[float], produced: int, fraction: float) -> float:
    """The nearest-rank percentile of ``produced`` events of which only ``delivered_seconds`` arrived.

    Args:
        delivered_seconds: latency of each delivered event (any order).
        produced: how many events were produced; at least ``len(delivered_seconds)``.
        fraction: the percentile as a fraction, e.g. 0.99.

    Returns:
        The latency at rank ``ceil(fraction * produced)``, or ``math.inf`` when that rank falls
        on an undelivered event (or nothing was produced).
    """
    if produced < len(delivered_seconds):
        raise ValueError(f"{len(delivered_seconds)} delivered out of only {produced} produced")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    if produced == 0:
        return math.inf
    rank = max(1, math.ceil(fraction * produced))
    if rank > len(delivered_seconds):
        return math.inf
    return sorted(delivered_seconds)[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one phase over every produced event."""

    produced: int
    delivered: int
    percentiles_seconds: Mapping[float, float]

    @property
    def delivered_fraction(self) -> float:
        return self.delivered / self.produced if self.produced else 0.0

    def percentile(self, fraction: float) -> float:
        return self.percentiles_seconds[fraction]

    def as_json(self) -> dict[str, float | int | None]:
        """JSON figures; an infinite percentile is ``null``."""
        figures: dict[str, float | int | None] = {
            "produced": self.produced, "delivered": self.delivered,
            "delivered_fraction": round(self.delivered_fraction, 4)}
        for fraction, value in self.percentiles_seconds.items():
            figures[f"p{round(fraction * 100)}_seconds"] = None if math.isinf(value) else round(value, 4)
        return figures


def summarize_latency(delivered_seconds: Sequence[float], produced: int,
                      fractions: Sequence[float] = PERCENTILES) -> LatencySummary:
    """`percentile_over_all` for each of ``fractions``."""
    return LatencySummary(produced, len(delivered_seconds),
                          {f: percentile_over_all(delivered_seconds, produced, f) for f in fractions})


def rate_per_second(timestamps: Sequence[float]) -> float:
    """Events per second from the first to the last timestamp (the first opens the window)."""
    if len(timestamps) < 2:
        return 0.0
    ordered = sorted(timestamps)
    return (len(ordered) - 1) / max(ordered[-1] - ordered[0], 1e-6)


#: Share of a phase's completions its steady-state rate is taken over: the first and the last 5 %
#: are left out (a phase opens with a burst of starts beside cold processes, and a straggler or two
#: can end it seconds after the rest).
MIDDLE_FRACTION = 0.9


def middle_rate(timestamps: Sequence[float], fraction: float = MIDDLE_FRACTION) -> float:
    """Events per second over the middle ``fraction`` of the timestamps (`rate_per_second` when too few)."""
    ordered = sorted(timestamps)
    cut = round(len(ordered) * (1 - fraction) / 2)
    first, last = cut, len(ordered) - 1 - cut
    if last - first < 2:
        return rate_per_second(ordered)
    return (last - first) / max(ordered[last] - ordered[first], 1e-6)


S = TypeVar("S")


def _soak_windows(samples: Sequence[S], warmup_fraction: float) -> tuple[list[S], list[S], list[S]]:
    """A soak's samples after warm-up, and their first and last tenth (all empty when there are none)."""
    warm = list(samples[int(len(samples) * warmup_fraction):]) or list(samples)
    window = max(1, len(warm) // 10)
    return warm, warm[:window], warm[-window:]


def growth_ratio(samples: Sequence[float], warmup_fraction: float = 0.1) -> tuple[float, float, float]:
    """``(start, end, end / start - 1)`` of a soak's samples: means of the first and last tenth after warm-up."""
    warm, first, last = _soak_windows(samples, warmup_fraction)
    if not warm:
        return 0.0, 0.0, 0.0
    start, end = sum(first) / len(first), sum(last) / len(last)
    return start, end, (end / start - 1) if start else 0.0


@dataclass(frozen=True)
class LastingGrowth:
    """`lasting_growth` of a process tree's samples.

    Attributes:
        start, end: the mean memory (MiB) of the lasting processes over the first and last tenth after warm-up.
        growth: ``end / start - 1``.
        lasting: how many processes lived through both windows (the ones measured).
        processes_start, processes_end: how many processes the tree had in the first and in the last sample
            after warm-up (a connection pool that opened or closed a connection meanwhile).
    """

    start: float
    end: float
    growth: float
    lasting: int
    processes_start: int
    processes_end: int


def lasting_growth(samples: Sequence[Mapping[int, float]], warmup_fraction: float = 0.1) -> LastingGrowth:
    """`growth_ratio` of a process tree (each sample: pid -> MiB) over the processes in every sample of the
    first and last tenth after warm-up.

    A process that starts or ends inside the soak is left out: PostgreSQL forks a backend per new
    connection (about 6 MiB each), so a pool that opens one more connection in the last tenth grows
    the tree's sum by a tenth with no process's memory growing. A leak is a lasting process growing.
    """
    warm, first, last = _soak_windows(samples, warmup_fraction)
    if not warm:
        return LastingGrowth(0.0, 0.0, 0.0, 0, 0, 0)
    lasting = set.intersection(*(set(sample) for sample in (*first, *last)))

    def mean(part: Sequence[Mapping[int, float]]) -> float:
        return sum(sum(sample[pid] for pid in lasting) for sample in part) / len(part)

    start, end = mean(first), mean(last)
    return LastingGrowth(start, end, (end / start - 1) if start else 0.0, len(lasting), len(warm[0]), len(warm[-1]))


@dataclass(frozen=True)
class InterleavedRatio:
    """A measured phase against a ceiling read before and after each of its rounds.

    Attributes:
        measured: the phase's reading in each round.
        ceilings: the ceiling's readings, one before the first round and one after each round.
        ratios: each round against the mean of the ceiling readings either side of it.
    """

    measured: tuple[float, ...]
    ceilings: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """The median round's ratio: one round on a server that stalled moves it no more than any other."""
        return median(self.ratios)

    @property
    def measured_median(self) -> float:
        return median(self.measured)

    @property
    def ceiling_mean(self) -> float:
        return sum(self.ceilings) / len(self.ceilings)


def interleaved_ratio(measured: Sequence[float], ceilings: Sequence[float]) -> InterleavedRatio:
    """Pairs round ``i`` of ``measured`` with the mean of ``ceilings[i]`` and ``ceilings[i + 1]``.

    Raises:
        ValueError: unless there is one ceiling reading more than there are rounds, and at least one round.
    """
    if not measured or len(ceilings) != len(measured) + 1:
        raise ValueError(f"{len(measured)} rounds need {len(measured) + 1} ceiling readings, not {len(ceilings)}")
    ratios = tuple(value / ((before + after) / 2) if before + after > 0 else 0.0
                   for value, before, after in zip(measured, ceilings, ceilings[1:], strict=False))
    return InterleavedRatio(tuple(measured), tuple(ceilings), ratios)

