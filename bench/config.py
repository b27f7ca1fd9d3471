"""Sizes of one benchmark run: every phase's scale in one frozen dataclass, one small one per fault phase."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run.

    Attributes:
        partitions: partitions of every topic.
        concurrency: the consumer's in-flight bound, and the raw starters' concurrency.
        raw_workflows: raw-ceiling workflows (start plus one no-op activity).
        floor_samples: sequential raw workflows timed start -> activity at no load.
        routed_events: bridge phase: events the consumer turns into workflow starts.
        unrouted_events: events no journey listens to, read by a raw loop and by the consumer.
        capacity_events: preloaded events the full path sends one notification each for.
        latency_seconds: how long each latency phase produces.
        light_rate_per_second: light load, capped at a tenth of the measured capacity.
        drain_seconds: after producing, how long a phase waits for the last sends.
        hot_journeys: journeys of one customer sending at the same moment (cap 3 a day).
        soak_seconds: steady load while consumer and worker RSS are sampled.
        soak_routed_per_second, soak_unrouted_per_second: the soak's load (notifications capped at a
            quarter of the measured capacity, so the soak is steady rather than a growing backlog).
        phase_timeout_seconds: a throughput phase that takes longer fails the run.
    """

    partitions: int = 6
    concurrency: int = 256
    raw_workflows: int = 2000
    floor_samples: int = 50
    routed_events: int = 4000
    unrouted_events: int = 300_000
    capacity_events: int = 1000
    latency_seconds: float = 30.0
    light_rate_per_second: float = 5.0
    drain_seconds: float = 60.0
    hot_journeys: int = 50
    soak_seconds: float = 600.0
    soak_routed_per_second: float = 5.0
    soak_unrouted_per_second: float = 200.0
    phase_timeout_seconds: float = 900.0


#: ``--quick``: every phase at small sizes (well under three minutes on the 2-core machine).
QUICK = BenchConfig(partitions=3, concurrency=64, raw_workflows=100, floor_samples=10, routed_events=300,
                    unrouted_events=20_000, capacity_events=100, latency_seconds=6.0, light_rate_per_second=2.0,
                    drain_seconds=20.0, soak_seconds=20.0, soak_routed_per_second=2.0,
                    soak_unrouted_per_second=100.0, phase_timeout_seconds=180.0)

