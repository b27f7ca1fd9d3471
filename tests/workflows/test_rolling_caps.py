"""Rolling weekly and monthly caps across journeys of different priorities, on the time-skipping server.

Sends are counted at the provider stub. Automatic time skipping is off (it would jump over the
send activity's heartbeat timeout while a provider call runs); the tests skip days explicitly once
a capped send is held back by a durable timer. The customer's zone is chosen so that "now" is
well inside a local day, so every send of a phase falls on the same local day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.caps import CapSet
from activities.send import SendPolicy
from tests.activities.journey_support import channels_for, event, journey, run_journey, send, worker
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually
from workflows._calendar import start_of_local_day
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences_client import preferences_state

__all__ = ["provider"]


def _zone_inside_a_day(now: datetime) -> str:
    """A zone where ``now`` is between 03:00 and 21:00 local (UTC or Tokyo always is one of them)."""
    return next(z for z in ("UTC", "Asia/Tokyo") if 3 <= now.astimezone(ZoneInfo(z)).hour <= 20)


async def _timer_started(handle: WorkflowHandle[Any, JourneyStatus]) -> bool:
    history = await handle.fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)


async def _statuses(client: Client, queue: str, steps: list[dict[str, Any]], journey_id: str, customer: str,
                    zone: str, unique: str) -> list[str]:
    status = await run_journey(client, queue, journey(steps, journey_id), event(customer, timezone=zone),
                               f"journey:{journey_id}:{unique}")
    return [s.outcome for s in status.sends]


async def test_weekly_cap_holds_across_journeys_the_higher_priority_gets_the_last_slot_and_a_rollover_frees_one(
        time_skipping_env: WorkflowEnvironment, provider: ProviderStub, unique: str) -> None:
    client, queue, customer = time_skipping_env.client, f"q-{unique}", f"c-{unique}"
    zone = _zone_inside_a_day(await time_skipping_env.get_current_time())
    policy = SendPolicy(caps=CapSet.parse("sms:week=3"))  # reserve 1: normal sends see 2 slots, high sends 3
    registry = CollectorRegistry()
    async with worker(client, queue, channels_for(provider.base_url), policy=policy, registry=registry):
        with time_skipping_env.auto_time_skipping_disabled():
            promo = await _statuses(client, queue, [send("p1", "sms"), send("p2", "sms"), send("p3", "sms"),
                                                    send("mail", "email")], "promo", customer, zone, unique)
            alert = await _statuses(client, queue, [send("a1", "sms", priority="high"),
                                                    send("a2", "sms", priority="high")], "alert", customer, zone,
                                    unique)
            receipt = await _statuses(client, queue, [send("r1", "sms", priority="transactional")], "receipt",
                                      customer, zone, unique)
            assert len(provider.sends()) == 5  # p1, p2, mail, a1, r1
            handle = await client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(journey([send("n1", "sms", on_cap="defer")], "news"),
                                               event(customer, timezone=zone)),
                id=f"journey:news:{unique}", task_queue=queue, result_type=JourneyStatus)
            await eventually(lambda: _timer_started(handle), message="the capped send to be held back")
            assert len(provider.sends()) == 5
            await time_skipping_env.sleep(timedelta(days=7, hours=1))
            news = await handle.result()
        state = await preferences_state(client, customer)

    # The third promotion is refused although a slot is free: the last one is kept for higher priorities.
    assert promo == ["sent", "sent", "capped", "sent"]
    assert alert == ["sent", "capped"]  # the high-priority journey takes the last slot, then the week is full
    assert receipt == ["sent"]  # transactional passes the cap
    assert [s.outcome for s in news.sends] == ["sent"]
    assert len(provider.sends()) == 6
    first_day = date.fromisoformat(state.ledger[f"journey:promo:{unique}/p1"].local_day)
    deferred = state.ledger[f"journey:news:{unique}/n1"]
    # Deferred to the local midnight on which the first week's sends leave the 7-day window.
    assert datetime.fromisoformat(deferred.reserved_at) >= start_of_local_day(first_day + timedelta(days=7), zone)
    assert state.ledger[f"journey:receipt:{unique}/r1"].priority == "transactional"
    capped = {priority: registry.get_sample_value("eventflow_send_capped_total",
                                                  {"channel": "sms", "cap": "sms:week", "priority": priority})
              for priority in ("normal", "high")}
    assert capped == {"normal": 2.0, "high": 1.0}  # p3 skipped and n1 deferred once; a2 skipped


async def test_caps_no_loader_checked_fail_the_send_permanently_without_a_provider_call(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    queue, customer = f"q-{unique}", f"c-{unique}"
    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        outcomes = await _statuses(temporal_client, queue, [send("bad", "sms", caps="sms:fortnight=2"),
                                                            send("good", "sms")], "handmade", customer, "UTC", unique)

    assert outcomes == ["failed:InvalidCaps", "sent"]
    assert len(provider.sends()) == 1


async def test_monthly_cap_across_channels_outlasts_a_week_and_frees_after_thirty_local_days(
        time_skipping_env: WorkflowEnvironment, provider: ProviderStub, unique: str) -> None:
    client, queue, customer = time_skipping_env.client, f"q-{unique}", f"c-{unique}"
    zone = _zone_inside_a_day(await time_skipping_env.get_current_time())
    # The worker allows 9 a month; this journey's and that one's own caps say 4 over every channel.
    month = "all:month=4"
    async with worker(client, queue, channels_for(provider.base_url), policy=SendPolicy(caps=CapSet.parse(
            "all:month=9;sms:week=9"))):
        with time_skipping_env.auto_time_skipping_disabled():
            digest = await _statuses(client, queue, [send("d1", "email", caps=month), send("d2", "sms", caps=month),
                                                     send("d3", "email", caps=month), send("d4", "sms", caps=month)],
                                     "digest", customer, zone, unique)
            vip = await _statuses(client, queue, [send("v1", "whatsapp", caps=month, priority="high"),
                                                  send("v2", "email", caps=month, priority="high")],
                                  "vip", customer, zone, unique)
            await time_skipping_env.sleep(timedelta(days=8))
            # A week later the weekly windows are empty, but the month still holds all four.
            later = await _statuses(client, queue, [send("l1", "sms", caps=month, priority="high"),
                                                    send("l2", "sms")], "later", customer, zone, unique)
            handle = await client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(journey([send("m1", "email", caps=month, on_cap="defer")], "monthly"),
                                               event(customer, timezone=zone)),
                id=f"journey:monthly:{unique}", task_queue=queue, result_type=JourneyStatus)
            await eventually(lambda: _timer_started(handle), message="the capped send to be held back")
            assert len(provider.sends()) == 5
            await time_skipping_env.sleep(timedelta(days=23))
            monthly = await handle.result()
        state = await preferences_state(client, customer)

    assert digest == ["sent", "sent", "sent", "capped"]  # normal priority: 3 of the 4, across email and sms
    assert vip == ["sent", "capped"]  # the last slot, on another channel still: the cap is across channels
    # l2 follows the worker's caps only (9 a month), which the other journeys' 4 sends do not reach.
    assert later == ["capped", "sent"]
    assert [s.outcome for s in monthly.sends] == ["sent"]
    assert len(provider.sends()) == 6
    first_day = date.fromisoformat(state.ledger[f"journey:digest:{unique}/d1"].local_day)
    deferred = state.ledger[f"journey:monthly:{unique}/m1"]
    assert datetime.fromisoformat(deferred.reserved_at) >= start_of_local_day(first_day + timedelta(days=30), zone)
