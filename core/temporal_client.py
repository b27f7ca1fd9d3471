"""Connecting to Temporal with the configured namespace, TLS, mTLS or API key, and payload encryption."""

from __future__ import annotations

import logging
from functools import cache

from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    MetricBuffer,
    OpenTelemetryConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import TLSConfig

from core import tracing
from core.codec import data_converter
from core.errors import EventflowError
from core.settings import TemporalSettings

# Phrases in the SDK core's connection errors, and how an operator would say them.
_REASONS = (
    ("Connection refused", "connection refused"),
    ("dns error", "the host name does not resolve"),
    ("failed to lookup address", "the host name does not resolve"),
    ("timed out", "timed out"),
    ("certificate", "TLS certificate rejected"),
    ("tls", "TLS handshake failed"),
    ("Unauthenticated", "authentication rejected"),
)


CORE_LOGGER = "temporalio.core"
"""The stdlib logger the SDK core's own log lines are forwarded to (then rendered like every other line)."""


def core_logging() -> LoggingConfig:
    """Forwards the SDK core's warnings and errors to `CORE_LOGGER` instead of its own coloured text."""
    return LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                         forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)))


def build_runtime(metrics: OpenTelemetryConfig | PrometheusConfig | MetricBuffer | None = None) -> Runtime:
    """An SDK runtime whose core logs go through the process's logging (and ``metrics``, if given)."""
    return Runtime(telemetry=TelemetryConfig(logging=core_logging(), metrics=metrics))


@cache
def _shared_runtime() -> Runtime:
    # One per process: a runtime owns a thread pool, and every client may share it.
    return build_runtime()


class TemporalUnreachableError(EventflowError):
    """The Temporal frontend could not be reached at start-up; one line naming the setting.

    Attributes:
        address: the ``TEMPORAL_ADDRESS`` used.
        reason: a short reason (``connection refused``) or the SDK's message.
    """

    def __init__(self, address: str, namespace: str, reason: str) -> None:
        super().__init__(f"TEMPORAL_ADDRESS={address}: cannot connect to Temporal (namespace {namespace}): {reason}")
        self.address = address
        self.reason = reason


def _reason(message: str) -> str:
    for phrase, reason in _REASONS:
        if phrase.lower() in message.lower():
            return reason
    short = message.removeprefix("Failed client connect: ").splitlines()[0] if message else "unknown error"
    return short[:200]


def _tls(settings: TemporalSettings) -> TLSConfig | bool:
    if settings.tls_ca_path is None and settings.tls_cert_path is None:
        return settings.api_key is not None
    return TLSConfig(
        server_root_ca_cert=settings.tls_ca_path.read_bytes() if settings.tls_ca_path else None,
        client_cert=settings.tls_cert_path.read_bytes() if settings.tls_cert_path else None,
        client_private_key=settings.tls_key_path.read_bytes() if settings.tls_key_path else None,
    )


async def connect(settings: TemporalSettings, *, runtime: Runtime | None = None) -> Client:
    """Returns a client for the configured Temporal frontend.

    Args:
        runtime: the SDK runtime (telemetry, e.g. the worker's Prometheus exporter); if None, one
            shared runtime that forwards the core's logs to `CORE_LOGGER`.

    While tracing is on (`core.tracing`), the client carries Temporal's tracing interceptor, so
    its starts and signals, and the workflows and activities of workers built on it, are traced.

    With payload keys configured (``EVENTFLOW_PAYLOAD_KEYS``), every payload and failure message the
    client, and every worker built on it, writes is encrypted (`core.codec`).

    Raises:
        TemporalUnreachableError: when the frontend cannot be reached (one line, no traceback).
    """
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=_tls(settings),
            api_key=settings.api_key.get_secret_value() if settings.api_key is not None else None,
            runtime=runtime if runtime is not None else _shared_runtime(),
            interceptors=tracing.temporal_interceptors(),
            data_converter=data_converter(settings.payload_keyring()),
        )
    except RuntimeError as exc:  # the SDK core reports every connection failure as RuntimeError
        raise TemporalUnreachableError(settings.address, settings.namespace, _reason(str(exc))) from exc
