"""Connecting to Temporal with the configured namespace, TLS, mTLS or API key."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from eventflow.settings import TemporalSettings


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
        runtime: the SDK runtime (telemetry, e.g. the worker's Prometheus exporter); the default one if None.
    """
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        tls=_tls(settings),
        api_key=settings.api_key,
        runtime=runtime,
    )
