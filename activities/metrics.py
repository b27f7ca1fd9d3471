"""The worker's notification metrics, built once from an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SendMetrics:
    """Sends by channel, provider and outcome, and provider-call latency; labels are bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.sent = Counter(
            "eventflow_notifications_sent_total",
            "Send attempts by channel, provider and outcome (sent, duplicate, opted_out, capped, deferred, "
            "retryable error type, failed:<type>).",
            ["channel", "provider", "outcome"], registry=registry)
        self.send_seconds = Histogram(
            "eventflow_notification_send_seconds", "Time of one provider call, rate-limit wait excluded.",
            ["channel", "provider"], buckets=_SEND_BUCKETS, registry=registry)
        self.rate_limit_wait_seconds = Counter(
            "eventflow_rate_limit_wait_seconds_total", "Time sends waited for the provider's token bucket.",
            ["provider"], registry=registry)
        self.uncertain = Counter(
            "eventflow_send_uncertain_total",
            "Sends whose earlier attempt was interrupted in the crash window, by how it was resolved "
            "(reconciled_delivered, reconciled_missing, sent_again, not_sent_again).",
            ["channel", "provider", "resolution"], registry=registry)
        self.ledger_retries = Counter(
            "eventflow_send_ledger_retries_total",
            "Times a send waited to record a provider's answer because the ledger's database could not answer.",
            ["channel"], registry=registry)
        self.lease_waits = Counter(
            "eventflow_send_lease_waits_total",
            "Times an attempt waited because an earlier attempt still held the send's lease.",
            ["channel"], registry=registry)
        self.capped = Counter(
            "eventflow_send_capped_total",
            "Sends held back by a rolling frequency cap (skipped or deferred), by the cap that blocked them "
            "(scope:window) and the send's priority.",
            ["channel", "cap", "priority"], registry=registry)
        self.circuit_state = Gauge(
            "eventflow_provider_circuit_state",
            "Each provider's circuit breaker per worker: 0 closed, 1 half-open (one probe call), 2 open (skipped).",
            ["channel", "provider"], registry=registry)
        self.failovers = Counter(
            "eventflow_send_failovers_total",
            "Sends moved from one provider to the next in the channel's list, because the first was unavailable "
            "(answered 5xx or 429, unreachable) or its circuit was open.",
            ["channel", "from_provider", "to_provider"], registry=registry)
