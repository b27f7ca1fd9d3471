"""The ops endpoints, log rendering and tracing."""

from __future__ import annotations

from typing import ClassVar

from core.settings._base import HeaderMap, LogFormat, Port, Ratio, SettingsGroup, UpstreamSampling, env

# -- ops / logging ----------------------------------------------------------------------------------

class OpsSettings(SettingsGroup):
    """The ops HTTP server and log rendering."""

    concern: ClassVar[str] = "ops"

    metrics_port: Port = env("EVENTFLOW_METRICS_PORT", 9464, "Port of /metrics, /healthz and /readyz (0 disables); "
                             "unset: 9464 for the consumer, 9466 for the worker, 9467 for webhooks, 9468 for preferences, so they can "
                             "run on one host.")
    log_format: LogFormat = env("EVENTFLOW_LOG_FORMAT", "json", "Log rendering: json or console.")


class TracingSettings(SettingsGroup):
    """Where spans go (OTLP/HTTP); tracing is on only when an endpoint is set."""

    concern: ClassVar[str] = "tracing"

    otlp_endpoint: str | None = env("EVENTFLOW_OTLP_ENDPOINT", None,
                                    "OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); unset turns "
                                    "tracing off.")
    otlp_headers: HeaderMap = env("EVENTFLOW_OTLP_HEADERS", {},
                                  "Headers for the OTLP exporter as `name=value,name=value` (e.g. an API key).")
    sample_ratio: Ratio = env("EVENTFLOW_TRACE_SAMPLE_RATIO", 1.0,
                              "Share of new traces kept (0-1); a record's upstream sampling decision is followed "
                              "unless EVENTFLOW_TRACE_UPSTREAM_SAMPLING is `ratio`.")
    upstream_sampling: UpstreamSampling = env(
        "EVENTFLOW_TRACE_UPSTREAM_SAMPLING", "respect",
        "`respect`: a record whose producer marked its trace sampled (`traceparent ...-01`) is always traced; "
        "`ratio`: such records are kept at EVENTFLOW_TRACE_SAMPLE_RATIO too, so producers cannot force 100 %.")

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None


