"""Every metric the consumer exports, built once from an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    """The consumer's Prometheus metrics; labels are bounded (topics, event types, journeys, outcomes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "eventflow_events_consumed_total", "Events consumed, by topic, event type and outcome.",
            ["topic", "event_type", "outcome"], registry=registry)
        self.workflow_starts = Counter(
            "eventflow_workflow_starts_total", "Journey workflows started.", ["journey"], registry=registry)
        self.workflow_dedupes = Counter(
            "eventflow_workflow_dedupes_total",
            "Starts that found the workflow ID already taken (a redelivered or replayed event).",
            ["journey"], registry=registry)
        self.workflow_signals = Counter(
            "eventflow_workflow_signals_total", "Events signalled to journeys, by outcome (delivered, no_instance).",
            ["journey", "outcome"], registry=registry)
        self.dead_letters = Counter(
            "eventflow_dead_letters_total", "Records published to the dead-letter topic, by error type.",
            ["topic", "error_type"], registry=registry)
        self.retries = Counter(
            "eventflow_retries_total",
            "Retries after transient failures, by operation (temporal, decode, dead_letter, dead_letter_scan).",
            ["operation"], registry=registry)
        self.retrying = Gauge(
            "eventflow_records_retrying", "Records waiting out a transient failure now, by operation.",
            ["operation"], registry=registry)
        self.stalled_partitions = Gauge(
            "eventflow_stalled_partitions",
            "Assigned partitions whose commit position has not moved for the stall threshold while records "
            "are in flight (the log says which and why).", registry=registry)
        self.dead_letters_deduplicated = Counter(
            "eventflow_dead_letters_deduplicated_total",
            "Records not dead-lettered again because an earlier (killed) consumer already had.",
            ["topic"], registry=registry)
        self.unexpected_failures = Counter(
            "eventflow_unexpected_failures_total",
            "Exceptions the handler did not expect, by stage (route, dispatch, handler); the record is "
            "dead-lettered, except at stage handler, where its partition stalls and says so.",
            ["stage"], registry=registry)
        self.processing_seconds = Histogram(
            "eventflow_event_processing_seconds", "Time from poll to done for one event.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "eventflow_events_in_flight", "Events polled but not yet done.", registry=registry)
        self.paused_partitions = Gauge(
            "eventflow_paused_partitions", "Assigned partitions currently paused for back-pressure.",
            registry=registry)
        self.lag = Gauge(
            "eventflow_consumer_lag_messages", "High watermark minus committed position, per partition.",
            ["topic", "partition"], registry=registry)
        self.commits = Counter(
            "eventflow_offset_commits_total", "Offset commits, by outcome (ok, failed).", ["outcome"],
            registry=registry)
