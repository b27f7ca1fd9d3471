"""Fail closed at run time: outside development mode a channel without a provider sends nothing anywhere.

A journey published live on such a channel is refused by the worker (logged and counted once per
version, start-up not stopped), and its sends fail as ``ChannelUnavailable`` on the real Temporal
server instead of reaching the local outbox file in clear.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from temporalio.client import Client

from activities.channels import ChannelProviders
from activities.config import channels_from
from activities.outcomes import SendStatus
from consumer.catalog_topic import CatalogMetrics
from core.settings import ChannelSettings, SendGridSettings, TwilioSettings
from eventflow.worker import CatalogChannelCheck
from journeys.catalog import Catalog, CatalogAction, SourceFile, next_entry
from journeys.loader import load_all
from tests.activities.journey_support import event, journey, run_journey, send, worker

NOT_DEV = {"EVENTFLOW_EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.k", "EVENTFLOW_EMAIL_FROM": "a@b.example"}


def _channels(tmp_path: Path, environ: dict[str, str]) -> tuple[ChannelSettings, dict[str, ChannelProviders]]:
    settings = ChannelSettings.load(environ)
    built = channels_from(settings, SendGridSettings.load(environ), TwilioSettings.load(environ),
                          outbox=tmp_path / "outbox.jsonl")
    return settings, built


async def test_a_send_on_a_channel_without_provider_fails_as_channel_unavailable_and_writes_no_file(
        temporal_client: Client, tmp_path: Path, unique: str) -> None:
    _, channels = _channels(tmp_path, NOT_DEV)
    registry = CollectorRegistry()
    queue = f"q-{unique}"
    async with worker(temporal_client, queue, channels, registry=registry):
        status = await run_journey(temporal_client, queue, journey([send("text", "sms")]), event(f"c-{unique}"),
                                   f"journey:unserved:{unique}")
    assert [(s.channel, s.status, s.error_type) for s in status.sends] == [
        ("sms", SendStatus.FAILED, "ChannelUnavailable")]
    assert registry.get_sample_value("eventflow_notifications_sent_total", {
        "channel": "sms", "provider": "unavailable", "outcome": "failed:ChannelUnavailable"}) == 1
    assert registry.get_sample_value("eventflow_notifications_sent_total", {
        "channel": "sms", "provider": "outbox", "outcome": "sent"}) is None
    assert not (tmp_path / "outbox.jsonl").exists(), "nothing in clear on the disk"


def _catalog_with_sms_journey(version_bump: int = 0) -> Catalog:
    definition = next(d for d in load_all() if d.id == "abandoned_cart")
    catalog = Catalog()
    for _ in range(1 + version_bump):
        entry = next_entry(catalog, journey_id=definition.id, action=CatalogAction.PUBLISH, author="ana",
                           at=datetime(2026, 12, 1, tzinfo=UTC), summary="s", definition=definition,
                           definition_source=SourceFile("definitions/abandoned_cart.yaml", "id: abandoned_cart\n"))
        assert entry is not None
        catalog.apply(entry)
        definition = replace(definition, trigger_filter=f"payload.cart_total.amount > {len(catalog.history(definition.id))}")
    return catalog


def test_a_catalog_journey_on_an_unserved_channel_is_refused_once_per_version_and_counted(tmp_path: Path) -> None:
    settings, _ = _channels(tmp_path, {**NOT_DEV, "EVENTFLOW_SMS_PROVIDER": "outbox"})
    metrics = CatalogMetrics(CollectorRegistry())
    check = CatalogChannelCheck(settings, metrics)

    def refused() -> float:
        return metrics.registry.get_sample_value("eventflow_catalog_invalid_entries_total",
                                                 {"reason": "channel_unserved"}) or 0.0

    assert refused() == 0
    catalog = _catalog_with_sms_journey()
    assert check.refused(catalog) == ["abandoned_cart"]
    check(catalog)  # the follower calls it again on every change: the same version counts once
    assert refused() == 1
    check(_catalog_with_sms_journey(version_bump=1))
    assert refused() == 2, "a new version is refused again"


def test_dev_mode_refuses_nothing(tmp_path: Path) -> None:
    settings, _ = _channels(tmp_path, {"EVENTFLOW_DEV_MODE": "true"})
    assert CatalogChannelCheck(settings, CatalogMetrics(CollectorRegistry())).refused(_catalog_with_sms_journey()) == []
