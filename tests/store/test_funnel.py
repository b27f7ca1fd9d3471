"""Funnel events ride in the ledger's and the feedback's own transactions; `journeys report` aggregates them in SQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.ledger import Completion, FunnelStep, ReserveRequest
from activities.notifications import SendNotificationInput
from activities.outcomes import DeliveryOutcome, DeliveryReport, LedgerState, ReserveDecision
from activities.send import NotificationActivities, SendPolicy
from eventflow.cli import main
from events.model import Customer
from journeys.report import StageCounts
from store.feedback import StoreFeedback
from store.funnel import funnel
from store.ledger import PostgresLedger
from tests.activities.journey_support import channels_for
from tests.activities.provider_stub import ProviderStub, provider
from workflows.suppression import DeliveryFeedback

__all__ = ["provider"]


async def _delivered(ledger: PostgresLedger, journey: str, instance: int, step: str, *, version: int = 1,
                     variants: dict[str, str] | None = None) -> str:
    workflow_id = f"journey:{journey}:{instance}"
    key, customer = f"{workflow_id}/{step}", f"c-{journey}-{instance}"
    reservation = await ledger.reserve(ReserveRequest(idempotency_key=key, customer_id=customer, channel="email",
                                                      attempt=1, lease_seconds=30.0))
    assert reservation.decision is ReserveDecision.SEND
    completion = Completion(key, customer, "email", LedgerState.DELIVERED, "sendgrid", f"sg-{instance}", attempt=1)
    funnel_step = FunnelStep(journey, version, workflow_id, step, variants or {})
    await ledger.complete_step(completion, funnel_step)
    await ledger.complete_step(completion, funnel_step)  # a retried write records nothing twice
    return key


async def _report(feedback: StoreFeedback, key: str, outcome: DeliveryOutcome) -> None:
    await feedback.report(DeliveryFeedback(DeliveryReport(
        idempotency_key=key, customer_id="-", channel="email", provider="sendgrid", outcome=outcome,
        at=datetime.now(UTC).isoformat(), report_id=uuid.uuid4().hex)))


async def test_sends_and_reports_aggregate_into_the_funnel(store_pool: asyncpg.Pool) -> None:
    journey = f"funnel-{uuid.uuid4().hex[:8]}"
    ledger, feedback = PostgresLedger(store_pool), StoreFeedback(store_pool)
    first = await _delivered(ledger, journey, 1, "welcome", variants={"offer": "a"})
    second = await _delivered(ledger, journey, 2, "welcome", variants={"offer": "b"})
    await _delivered(ledger, journey, 1, "reminder", variants={"offer": "a"})
    await _delivered(ledger, journey, 3, "welcome", version=2)
    # Not delivered: no funnel event.
    failed = f"journey:{journey}:4/welcome"
    await ledger.complete_step(Completion(failed, "c-4", "email", LedgerState.FAILED, "sendgrid", attempt=0),
                               FunnelStep(journey, 1, f"journey:{journey}:4", "welcome"))
    for outcome in (DeliveryOutcome.DELIVERED, DeliveryOutcome.OPENED, DeliveryOutcome.OPENED, DeliveryOutcome.CLICKED):
        await _report(feedback, first, outcome)  # the second `opened` (another report id) counts once
    await _report(feedback, second, DeliveryOutcome.DELIVERED)

    found = await funnel(store_pool, journey)
    assert found.versions == (1, 2)
    assert found.totals == StageCounts(3, {"delivered": 2, "opened": 1, "clicked": 1})
    assert found.steps == [("welcome", StageCounts(3, {"delivered": 2, "opened": 1, "clicked": 1})),
                           ("reminder", StageCounts(1, {"delivered": 0, "opened": 0, "clicked": 0}))]
    assert dict(found.arms) == {"all": StageCounts(1, {"delivered": 0, "opened": 0, "clicked": 0}),
                                "offer=a": StageCounts(1, {"delivered": 1, "opened": 1, "clicked": 1}),
                                "offer=b": StageCounts(1, {"delivered": 1, "opened": 0, "clicked": 0})}
    assert (await funnel(store_pool, journey, version=2)).totals.sent == 1


async def test_the_send_activity_records_its_step_with_the_delivery(
        store_pool: asyncpg.Pool, provider: ProviderStub) -> None:
    journey, unique = "welcome_series", uuid.uuid4().hex[:8]
    workflow_id = f"journey:{journey}:{unique}"
    sends = NotificationActivities(channels_for(provider.base_url), ledger=PostgresLedger(store_pool),
                                   policy=SendPolicy(lease_seconds=30.0))
    notification = SendNotificationInput(
        idempotency_key=f"{workflow_id}/hello", channel="email", customer=Customer(id=f"c-{unique}",
                                                                                 email="c@example.com"),
        template_id="hello", locale="en", body_template="Hello", subject_template="Hi", workflow_id=workflow_id,
        journey_id=journey, step_id="hello", context={"journey": {"id": journey, "version": 4,
                                                                   "variants": {"subject": "short"}}})
    await ActivityEnvironment().run(sends.send_notification, notification)
    rows = await store_pool.fetch(
        "SELECT journey_id, journey_version, customer_id, kind, step_id, channel, arm FROM eventflow.journey_events"
        " WHERE workflow_id = $1", workflow_id)
    assert [tuple(row) for row in rows] == [(journey, 4, f"c-{unique}", "sent", "hello", "email", "subject=short")]


@pytest.mark.timeout(60)
async def test_journeys_report_reads_the_funnel_from_the_store(
        temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    journey = f"funnel-cli-{uuid.uuid4().hex[:8]}"
    await _delivered(PostgresLedger(store_pool), journey, 1, "welcome")
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
    monkeypatch.setenv("EVENTFLOW_DATABASE_URL", store_dsn)

    assert await asyncio.to_thread(main, ["journeys", "report", journey]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"journey {journey} (versions 1): 0 instances, 0 running (funnel from the customer store)"
    assert "  sent             1" in out
    assert any(line.split() == ["welcome", "1", "0", "0", "0"] for line in out)
