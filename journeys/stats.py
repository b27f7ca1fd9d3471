"""Conversion statistics for journey reports: rates, 95 % intervals, the difference and the lift.

Pure functions over counts. A rate's interval is the Wilson score interval; the interval of the
difference of two independent rates is Newcombe's hybrid score interval (his "method 10"),
built from the two Wilson intervals. Both stay inside their ranges and behave at 0 % and 100 %
and with small groups, where the normal approximation (rate ± 1.96·se) gives intervals below 0
or of zero width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: z for a two-sided 95 % interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high]."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Rate:
    """``successes`` out of ``trials``, with its Wilson interval (None without trials)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 <= self.successes <= self.trials:
            raise ValueError(f"a rate needs 0 <= successes <= trials, got {self.successes}/{self.trials}")

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> Interval | None:
        return wilson(self.successes, self.trials) if self.trials else None


def wilson(successes: int, trials: int, z: float = Z_95) -> Interval:
    """The Wilson score interval of a binomial proportion; ValueError without trials."""
    if trials <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Rounding can leave the bounds a hair outside [0, 1] or off p at the extremes.
    return Interval(max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass(frozen=True)
class Comparison:
    """An arm against its baseline (control or holdout).

    Attributes:
        difference: arm rate minus baseline rate (absolute, in [-1, 1]).
        interval: Newcombe's 95 % interval of the difference.
        lift: difference relative to the baseline rate (0.25 is +25 %); None when the baseline is 0.
    """

    arm: Rate
    baseline: Rate
    difference: float
    interval: Interval
    lift: float | None


def compare(arm: Rate, baseline: Rate, z: float = Z_95) -> Comparison | None:
    """The arm against its baseline; None when either has no trials."""
    if not arm.trials or not baseline.trials:
        return None
    p1, p2 = arm.successes / arm.trials, baseline.successes / baseline.trials
    first, second = wilson(arm.successes, arm.trials, z), wilson(baseline.successes, baseline.trials, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - first.low) ** 2 + (second.high - p2) ** 2)
    high = difference + math.sqrt((first.high - p1) ** 2 + (p2 - second.low) ** 2)
    return Comparison(arm=arm, baseline=baseline, difference=difference,
                      interval=Interval(max(-1.0, min(difference, low)), min(1.0, max(difference, high))),
                      lift=difference / p2 if p2 else None)
