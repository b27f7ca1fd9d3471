"""Quiet hours and frequency caps, decided by the customer's preferences workflow.

Deferrals use the time-skipping server with automatic skipping off: the test waits until the send
is held back, checks nothing reached the provider, then skips time explicitly. (Automatic skipping
would also jump over the send activity's heartbeat timeout while a provider call is in flight.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.send import SendPolicy
from events.model import CustomerEvent
from tests.activities.journey_support import channels_for, event, journey, run_journey, send, worker
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually
from workflows._calendar import next_local_midnight, quiet_window_end
from workflows.journey import EVENT_SIGNAL, JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences_client import preferences_state

__all__ = ["provider"]

TOKYO = "Asia/Tokyo"


def _window_around(now: datetime, zone: str) -> tuple[str, datetime]:
    """Quiet hours from an hour ago to two hours ahead (local), and when they end."""
    local = now.astimezone(ZoneInfo(zone))
    window = f"{(local - timedelta(hours=1)):%H:%M}-{(local + timedelta(hours=2)):%H:%M}"
    end = quiet_window_end(now, zone, window)
    assert end is not None
    return window, end


async def test_quiet_hours_defer_to_the_window_end_and_never_drop(time_skipping_env: WorkflowEnvironment,
                                                                  provider: ProviderStub, unique: str) -> None:
    client, queue, customer = time_skipping_env.client, f"q-{unique}", f"c-{unique}"
    window, end = _window_around(await time_skipping_env.get_current_time(), TOKYO)
    steps = [send("receipt", "sms", quiet_hours=False), send("promo", "sms")]
    async with worker(client, queue, channels_for(provider.base_url), policy=SendPolicy(quiet_hours=window)):
        with time_skipping_env.auto_time_skipping_disabled():
            handle = await client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(journey(steps), event(customer, timezone=TOKYO)),
                id=f"journey:test:{unique}", task_queue=queue, result_type=JourneyStatus)
            await eventually(lambda: len(provider.sends()) == 1, message="the transactional receipt")
            await asyncio.sleep(1.5)
            assert len(provider.sends()) == 1  # the promotion waits for the end of quiet hours
            await time_skipping_env.sleep(timedelta(hours=3))
            status = await handle.result()
        state = await preferences_state(client, customer)

    assert [s.status for s in status.sends] == ["sent", "sent"]
    assert len(provider.sends()) == 2
    receipt = state.ledger[f"journey:test:{unique}/receipt"]
    promo = state.ledger[f"journey:test:{unique}/promo"]
    assert datetime.fromisoformat(receipt.reserved_at) < end  # transactional: not held back
    assert datetime.fromisoformat(promo.reserved_at) >= end  # deferred to the end of quiet hours
    assert datetime.fromisoformat(promo.reserved_at) < end + timedelta(minutes=5)


async def test_daily_cap_skips_across_journeys_and_records_it(temporal_client: Client, provider: ProviderStub,
                                                             unique: str) -> None:
    client, queue, customer = temporal_client, f"q-{unique}", f"c-{unique}"
    async with worker(client, queue, channels_for(provider.base_url), policy=SendPolicy(daily_cap=2)):
        first = await run_journey(client, queue, journey([send("a", "sms"), send("b", "sms")], "one"),
                                  event(customer), f"journey:one:{unique}")
        second = await run_journey(client, queue, journey([send("a", "sms"), send("mail", "email")], "two"),
                                   event(customer), f"journey:two:{unique}")

    assert [s.status for s in first.sends] == ["sent", "sent"]
    assert [s.status for s in second.sends] == ["capped", "sent"]  # the cap is per channel
    assert [r.path.startswith("/2010") for r in provider.sends()] == [True, True, False]


async def test_daily_cap_defers_to_the_next_local_day_when_the_step_says_so(
        time_skipping_env: WorkflowEnvironment, provider: ProviderStub, unique: str) -> None:
    client, queue, customer = time_skipping_env.client, f"q-{unique}", f"c-{unique}"
    started = await time_skipping_env.get_current_time()
    async with worker(client, queue, channels_for(provider.base_url), policy=SendPolicy(daily_cap=1)):
        with time_skipping_env.auto_time_skipping_disabled():
            await run_journey(client, queue, journey([send("a", "sms")], "one"), event(customer, timezone=TOKYO),
                              f"journey:one:{unique}")
            handle = await client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(journey([send("a", "sms", on_cap="defer")], "two"),
                                               event(customer, timezone=TOKYO)),
                id=f"journey:two:{unique}", task_queue=queue, result_type=JourneyStatus)
            await asyncio.sleep(1.5)
            assert len(provider.sends()) == 1  # capped for today, deferred rather than dropped
            await time_skipping_env.sleep(timedelta(hours=25))
            later = await handle.result()
        state = await preferences_state(client, customer)

    assert later.sends[0].status == "sent"
    assert len(provider.sends()) == 2
    first_day = state.ledger[f"journey:one:{unique}/a"].local_day
    deferred = state.ledger[f"journey:two:{unique}/a"]
    assert deferred.local_day > first_day
    assert datetime.fromisoformat(deferred.reserved_at) >= next_local_midnight(started, TOKYO)


async def test_an_exit_during_a_quiet_hours_deferral_cancels_the_send(time_skipping_env: WorkflowEnvironment,
                                                                      provider: ProviderStub, unique: str) -> None:
    client, queue, customer = time_skipping_env.client, f"q-{unique}", f"c-{unique}"
    window, _ = _window_around(await time_skipping_env.get_current_time(), TOKYO)
    snapshot = {**journey([send("promo", "sms")]),
                "exit_events": [{"event_type": "OrderRefunded", "key_path": None, "when": None}]}
    trigger = event(customer, timezone=TOKYO)
    refund = CustomerEvent(event_id=f"refund-{unique}", event_type="OrderRefunded",
                           occurred_at=trigger.occurred_at, customer=trigger.customer, payload={"order_id": "ord-42"})
    async with worker(client, queue, channels_for(provider.base_url), policy=SendPolicy(quiet_hours=window)):
        with time_skipping_env.auto_time_skipping_disabled():
            handle = await client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(snapshot, trigger), id=f"journey:test:{unique}", task_queue=queue,
                result_type=JourneyStatus)
            await eventually(lambda: _timer_started(handle), message="the promotion to be held back")
            await handle.signal(EVENT_SIGNAL, refund)
            await time_skipping_env.sleep(timedelta(hours=3))
            status = await handle.result()

    assert [s.outcome for s in status.sends] == ["skipped:journey_exited"]
    assert provider.sends() == []


async def _timer_started(handle: WorkflowHandle[Any, JourneyStatus]) -> bool:
    history = await handle.fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)
