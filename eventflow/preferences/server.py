"""Runs ``eventflow preferences``: the preference center on its port, metrics and readiness on the ops port."""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry

from core.http import OpsServer, all_of
from core.preference_links import PreferenceLinks
from eventflow.preferences.app import PreferenceCenter, PreferenceMetrics
from eventflow.settings import PreferencesProcessSettings
from journeys.loader import default_journeys_dir
from journeys.topics import read_topics
from store import database_check, open_store
from store.consent import ConsentStore

log = structlog.get_logger(__name__)


async def run_preferences(settings: PreferencesProcessSettings, stop: asyncio.Event | None = None,
                          registry: CollectorRegistry | None = None) -> None:
    """Serves until SIGTERM or SIGINT (or ``stop``), then closes the listener and the pool."""
    keys = settings.links.keys()
    assert keys is not None, "load_preferences checks the keys"
    topics = read_topics(settings.journeys.journeys_dir or default_journeys_dir())
    registry = registry or CollectorRegistry()
    pool = await open_store(settings.database)
    assert pool is not None, "load_preferences checks the database"
    token = settings.server.api_token
    center = PreferenceCenter(links=PreferenceLinks(keys), consent=ConsentStore(pool), topics=topics,
                              public_url=settings.links.public_url,
                              api_token=token.get_secret_value() if token is not None else None,
                              form_seconds=settings.server.form_minutes * 60.0,
                              max_body_bytes=settings.server.max_body_bytes, metrics=PreferenceMetrics(registry),
                              port=settings.server.port)
    ops = OpsServer(registry, all_of({"database": database_check(pool)}), port=settings.ops.metrics_port) \
        if settings.ops.metrics_port else None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await center.start()
        if ops is not None:
            await ops.start()
        await stop.wait()
    finally:
        await center.stop()
        if ops is not None:
            await ops.stop()
        await pool.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("preferences_stopped")
