"""Sizes of one benchmark run: every phase's scale in one frozen dataclass, one small one per fault phase."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutageConfig:
    """The database-outage phase: notifications keep coming while the run's PostgreSQL is stopped.

    Attributes:
        down_seconds: how long PostgreSQL stays stopped (then it starts again on the same data).
        lead_seconds: how long events are produced before the stop, and again after the restart.
        rate_per_second: notifications produced per second, throughout (capped at a quarter of the
            measured capacity, so a backlog is the outage's, not the load's).
        drain_seconds: after the restart, how long the phase waits for the last sends.
    """

    down_seconds: float = 30.0
    lead_seconds: float = 10.0
    rate_per_second: float = 5.0
    drain_seconds: float = 180.0


@dataclass(frozen=True)
class FaultConfig:
    """The fault phase: an operator's bad day with two consumers, two workers and the SendGrid webhook.

    Events are produced at a steady rate while, one after another with ``gap_seconds`` between the
    end of one fault and the start of the next: a worker is killed (SIGKILL) and restarted, then a
    consumer, then the Temporal server, then the provider answers 503 to everything for
    ``storm_seconds`` while the other worker is killed and restarted.

    Attributes:
        events: events produced (one notification each); 0 skips the phase.
        rate_per_second: their steady rate.
        partitions: partitions of the phase's topic.
        first_fault_seconds: from the first event to the first kill.
        gap_seconds: from the end of one fault to the start of the next.
        process_down_seconds: how long a killed consumer or worker stays down.
        temporal_down_seconds: how long the killed Temporal server stays down (then it starts on the same state).
        storm_seconds: how long the provider answers 503.
        storm_kill_after_seconds: from the start of the storm to the kill of the other worker.
        provider_latency_seconds: the provider's answer time, drawn uniformly from this range.
        report_window_seconds: how long the worker waits for the provider's report on an uncertain
            send before sending it again (``EVENTFLOW_SEND_REPORT_WINDOW_SECONDS``).
        drain_seconds: after the last event, how long the phase waits for every send to settle.
    """

    events: int = 1200
    rate_per_second: float = 8.0
    partitions: int = 6
    first_fault_seconds: float = 20.0
    gap_seconds: float = 5.0
    process_down_seconds: float = 5.0
    temporal_down_seconds: float = 20.0
    storm_seconds: float = 15.0
    storm_kill_after_seconds: float = 5.0
    provider_latency_seconds: tuple[float, float] = (0.02, 0.08)
    report_window_seconds: float = 60.0
    drain_seconds: float = 300.0


@dataclass(frozen=True)
class AudienceConfig:
    """The audience phases (segments and broadcasts, bench/audience.py).

    Attributes:
        segment_events: events the consumer reads in each half of the segment-cost phase (once with
            no segment defined, once with the five of ``bench/audiences/``); 0 skips that phase and
            the entry-latency phase, which runs on its consumer.
        broadcast_members: members of the broadcast's segment; 0 skips the broadcast phase.
        broadcast_batch_size: recipients per batch activity of the ``Broadcast`` workflow.
        broadcast_rate_per_second: the broadcast's pace, set far above what the run can send so
            the figure is Eventflow's throughput, not the pacing.
        entry_events: profile updates that each make a customer enter a segment.
        entry_rate_per_second: their steady rate.
        drain_seconds: after the last profile update, how long the phase waits for the last entry.
    """

    segment_events: int = 4000
    broadcast_members: int = 10_000
    broadcast_batch_size: int = 500
    broadcast_rate_per_second: float = 100_000.0
    entry_events: int = 300
    entry_rate_per_second: float = 20.0
    drain_seconds: float = 60.0


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run.

    Attributes:
        partitions: partitions of every topic.
        concurrency: the consumer's in-flight bound, and the raw starters' concurrency.
        raw_workflows: raw-ceiling workflows (start plus one no-op activity).
        floor_samples: sequential raw workflows timed start -> activity at no load.
        routed_events: bridge phase: events the consumer turns into workflow starts.
        bridge_rounds: bridge phases, each between two raw start phases (the median round's ratio counts).
        unrouted_events: events no journey listens to, read by a raw loop and by the consumer.
        capacity_events: preloaded events the full path sends one notification each for, per round.
        capacity_rounds: full-path capacity phases, each between two raw notification ceilings (the median
            round's ratio counts).
        latency_seconds: how long each latency phase produces.
        light_rate_per_second: light load, capped at a tenth of the measured capacity.
        drain_seconds: after producing, how long a phase waits for the last sends.
        hot_journeys: journeys of one customer sending at the same moment (cap 3 a day).
        soak_seconds: steady load while consumer and worker RSS are sampled.
        soak_routed_per_second, soak_unrouted_per_second: the soak's load (notifications capped at a
            quarter of the measured capacity, so the soak is steady rather than a growing backlog).
        phase_timeout_seconds: a throughput phase that takes longer fails the run.
        outage: the database-outage phase (run when the run has its own PostgreSQL server).
        faults: the fault phase.
        audiences: the segment-cost, broadcast and segment-entry phases.
    """

    partitions: int = 6
    concurrency: int = 256
    raw_workflows: int = 2000
    floor_samples: int = 50
    routed_events: int = 4000
    bridge_rounds: int = 3
    unrouted_events: int = 300_000
    capacity_events: int = 1000
    capacity_rounds: int = 3
    latency_seconds: float = 30.0
    light_rate_per_second: float = 5.0
    drain_seconds: float = 60.0
    hot_journeys: int = 50
    soak_seconds: float = 600.0
    soak_routed_per_second: float = 5.0
    soak_unrouted_per_second: float = 200.0
    phase_timeout_seconds: float = 900.0
    outage: OutageConfig = field(default_factory=OutageConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    audiences: AudienceConfig = field(default_factory=AudienceConfig)


#: ``--quick``: every phase at small sizes (a few minutes on the 2-core machine).
QUICK = BenchConfig(partitions=3, concurrency=64, raw_workflows=100, floor_samples=10, routed_events=300,
                    bridge_rounds=1, unrouted_events=20_000, capacity_events=100, capacity_rounds=1,
                    latency_seconds=6.0, light_rate_per_second=2.0, drain_seconds=20.0, soak_seconds=20.0,
                    soak_routed_per_second=2.0,
                    soak_unrouted_per_second=100.0, phase_timeout_seconds=180.0,
                    outage=OutageConfig(down_seconds=10.0, lead_seconds=5.0, rate_per_second=2.0, drain_seconds=90.0),
                    faults=FaultConfig(events=160, rate_per_second=4.0, partitions=3, first_fault_seconds=5.0,
                                       gap_seconds=2.0, process_down_seconds=3.0, temporal_down_seconds=8.0,
                                       storm_seconds=6.0, storm_kill_after_seconds=2.0, report_window_seconds=20.0,
                                       drain_seconds=150.0),
                    audiences=AudienceConfig(segment_events=600, broadcast_members=1000, broadcast_batch_size=200,
                                             entry_events=60, entry_rate_per_second=10.0, drain_seconds=30.0))

