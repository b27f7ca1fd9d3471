"""Fail closed on the live catalog: a journey on a channel no provider serves is refused everywhere.

Outside development mode `journeys publish` refuses it (nothing reaches the topic); a consumer
following a catalog that holds it anyway (published by a development machine, or before the provider
was removed) starts no instance of it, counts it by reason and names it on readiness. Real Kafka.
The worker's side (its sends fail as ``ChannelUnavailable``) is in tests/eventflow/test_worker_channels.py.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumer.catalog_admin import CatalogValidationError, publish_path
from consumer.catalog_routes import follow_catalog
from consumer.catalog_topic import CatalogWriter
from core.settings import ChannelSettings
from events.model import Customer, CustomerEvent
from journeys.routing import StartJourney
from tests.catalog_keys import CATALOG_KEYS, CATALOG_KEYS_TEXT

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "journeys" / "templates"
JOURNEY = "unserved_thanks"
DEFINITION = """\
id: unserved_thanks
version: 1
trigger:
  event: PurchaseCompleted
entry:
  rule: once_per_key
  key: payload.order_id
steps:
  - id: thanks
    send:
      channel: email
      template: purchase_thank_you
"""
NOT_DEV_NO_EMAIL = ChannelSettings.load({"EVENTFLOW_SMS_PROVIDER": "twilio"})
NOT_DEV_EMAIL = ChannelSettings.load({"EVENTFLOW_EMAIL_PROVIDER": "sendgrid"})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "definitions").mkdir()
    shutil.copytree(REPO_TEMPLATES, tmp_path / "templates")
    (tmp_path / "definitions" / f"{JOURNEY}.yaml").write_text(DEFINITION)
    return tmp_path


@pytest.fixture
def writer(kafka_config: dict[str, str], unique: str) -> CatalogWriter:
    writer = CatalogWriter(kafka_config, f"test-catalog-unserved-{unique}", keys=CATALOG_KEYS)
    writer.ensure_topic()
    return writer


def _purchase() -> CustomerEvent:
    return CustomerEvent(f"e-{uuid.uuid4().hex[:8]}", "PurchaseCompleted", "2026-12-01T10:00:00+00:00",
                         Customer(f"c-{uuid.uuid4().hex[:8]}"), {"order_id": "o-1"})


def test_publish_refuses_a_journey_on_an_unserved_channel_outside_development_mode(
        writer: CatalogWriter, folder: Path) -> None:
    with pytest.raises(CatalogValidationError) as refused:
        publish_path(writer, folder, author="ana", channels=NOT_DEV_NO_EMAIL)
    [problem] = refused.value.problems
    assert problem.file.endswith(f"{JOURNEY}.yaml") and "EVENTFLOW_EMAIL_PROVIDER" in problem.message
    assert writer.read().latest(JOURNEY) is None, "nothing was written"
    dev = ChannelSettings.load({"EVENTFLOW_DEV_MODE": "true"})
    assert [p.entry is not None for p in publish_path(writer, folder, author="ana", channels=dev)] == [True]
    assert publish_path(writer, folder, author="ana", channels=NOT_DEV_EMAIL)[0].entry is None, "served: unchanged"


def test_the_publish_command_reads_the_providers_and_refuses(
        kafka_config: dict[str, str], writer: CatalogWriter, folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from eventflow.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_CATALOG_TOPIC", writer.topic)
    monkeypatch.setenv("EVENTFLOW_CATALOG_SIGNING_KEYS", CATALOG_KEYS_TEXT)
    monkeypatch.delenv("EVENTFLOW_DEV_MODE", raising=False)
    monkeypatch.delenv("EVENTFLOW_EMAIL_PROVIDER", raising=False)
    assert main(["journeys", "publish", str(folder), "--author", "ana"]) == 1
    err = capsys.readouterr().err
    assert "which no provider serves here (EVENTFLOW_EMAIL_PROVIDER" in err and "nothing published" in err
    monkeypatch.setenv("EVENTFLOW_EMAIL_PROVIDER", "sendgrid")
    assert main(["journeys", "publish", str(folder), "--author", "ana"]) == 0


async def test_a_consumer_starts_no_instance_of_a_refused_journey_counts_it_and_says_so_on_readiness(
        kafka_config: dict[str, str], writer: CatalogWriter, folder: Path) -> None:
    publish_path(writer, folder, author="dev-laptop")  # no check: as a development machine could

    registry = CollectorRegistry()
    routes, follower = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS, registry=registry,
                                            channels=NOT_DEV_NO_EMAIL)
    assert not [r for r in routes.route(_purchase()) if isinstance(r, StartJourney)], "no instance starts"
    assert registry.get_sample_value("eventflow_catalog_invalid_entries_total",
                                     {"reason": "channel_unserved"}) == 1
    ready, detail = follower.readiness()
    assert ready and f"journeys refused, no provider serves a channel they send on: {JOURNEY}" in detail

    served, _ = await follow_catalog(kafka_config, writer.topic, keys=CATALOG_KEYS, registry=CollectorRegistry(),
                                     channels=NOT_DEV_EMAIL)
    assert [r.journey_id for r in served.route(_purchase()) if isinstance(r, StartJourney)] == [JOURNEY]
