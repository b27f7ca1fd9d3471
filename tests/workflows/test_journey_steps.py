"""Every step type of the interpreter, on Temporal's time-skipping test server."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowHandle
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from devstack import provision
from events.model import CustomerEvent
from tests.workflows.journey_harness import Capture, compile_journey, event, purchase, result, start, worker
from workflows.journey import EVENT_SIGNAL, STATUS_QUERY, JourneyStatus, split_bucket


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
async def queue(time_skipping_env: WorkflowEnvironment, capture: Capture, unique: str) -> AsyncIterator[str]:
    task_queue = f"steps-{unique}"
    async with worker(time_skipping_env.client, task_queue, capture):
        yield task_queue


async def _started_at(handle: WorkflowHandle[Any, Any]) -> datetime:
    description = await handle.describe()
    started: datetime = description.start_time
    return started


POST_PURCHASE = """
id: pp
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: once_per_key, key: payload.order_id}
exit:
  - event: OrderRefunded
steps:
  - id: thanks
    send: {channel: email, template: note}
  - id: wait
    delay: {duration: 3d}
  - id: review
    send: {channel: email, template: note}
"""


async def test_send_and_delay_run_in_order_with_locale_variant(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, POST_PURCHASE)
    handle = await start(time_skipping_env.client, queue, snapshot, purchase(locale="de"))

    status = await result(handle)

    origin = await _started_at(handle)
    assert [s.step_id for s in capture.sent] == ["thanks", "review"]
    assert capture.sent[0].subject == "Notiz pp" and capture.sent[0].locale == "de"
    assert timedelta(days=3) <= capture.sent[1].at - origin < timedelta(days=3, minutes=1)
    assert status.finished and "never" not in [v.step_id for v in status.trail]
    assert [s.step_id for s in status.sends] == ["thanks", "review"]
    assert status.content_hash == snapshot["content_hash"]


async def test_exit_event_in_the_middle_of_a_delay_ends_the_journey(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, POST_PURCHASE)
    trigger = purchase(order_id="ord-77")
    handle = await start(time_skipping_env.client, queue, snapshot, trigger)
    await time_skipping_env.sleep(timedelta(days=1))

    mid = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
    assert mid.current_step == "wait" and mid.current_step_kind == "delay" and mid.waiting_until
    assert [s.step_id for s in mid.sends] == ["thanks"]
    other_order = event("OrderRefunded", {"order_id": "ord-other", "amount": {"amount": "1.00", "currency": "EUR"},
                                          "reason": None}, customer_id=trigger.customer.id)
    await handle.signal(EVENT_SIGNAL, other_order)
    refund = event("OrderRefunded", {"order_id": "ord-77", "amount": {"amount": "49.90", "currency": "EUR"},
                                     "reason": "damaged"}, customer_id=trigger.customer.id)
    await handle.signal(EVENT_SIGNAL, refund)
    status = await result(handle)

    assert status.exit_reason == "exit event OrderRefunded"
    assert capture.steps(handle.id) == ["thanks"]
    assert status.current_step is None and status.finished


BRANCH = """
id: br
version: 1
trigger: {event: PurchaseCompleted, filter: "payload.total.amount > 0"}
entry: {rule: every_time}
steps:
  - id: choose
    branch:
      cases:
        - when: "payload.total.amount >= 100 and customer.locale in ['en', 'de']"
          steps:
            - id: vip
              send: {channel: email, template: note}
      else:
        - id: regular
          send: {channel: sms, template: note}
  - id: after_branch
    send: {channel: whatsapp, template: note}
"""


@pytest.mark.parametrize(("amount", "expected"), [("100.00", ["vip", "after_branch"]),
                                                  ("99.99", ["regular", "after_branch"])])
async def test_branch_takes_the_matching_arm_then_continues(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path,
        amount: str, expected: list[str]) -> None:
    snapshot = compile_journey(tmp_path, BRANCH)
    handle = await start(time_skipping_env.client, queue, snapshot, purchase(amount=amount))

    await result(handle)

    assert capture.steps(handle.id) == expected
    assert [s.channel for s in capture.sent] == (["email", "whatsapp"] if expected[0] == "vip" else ["sms", "whatsapp"])


async def test_a_branch_condition_that_fails_on_the_data_is_false_and_the_journey_goes_on(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, BRANCH)
    # The validator rejects this condition; a snapshot with it (or an event unlike its schema) used
    # to fail the workflow task forever on TypeError: unhashable type: 'dict'.
    snapshot["steps"][0]["branch"]["cases"][0]["when"] = "payload.total in customer"
    handle = await start(time_skipping_env.client, queue, snapshot, purchase(amount="100.00"))

    status = await result(handle)

    assert status.finished and capture.steps(handle.id) == ["regular", "after_branch"]


async def test_a_failing_condition_is_counted_by_journey_and_step_in_the_sdk_metrics(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"127.0.0.1:{port}", counters_total_suffix=True, durations_as_seconds=True)))
    snapshot = compile_journey(tmp_path, BRANCH)
    snapshot["steps"][0]["branch"]["cases"][0]["when"] = "payload.total in customer"
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(provision.test_server()),
                                                        runtime=runtime,
                                                        test_server_startup_timeout=provision.TEST_SERVER_STARTUP)
    try:
        async with worker(env.client, "metrics", Capture()):
            await result(await start(env.client, "metrics", snapshot, purchase(amount="100.00")))
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    finally:
        await env.shutdown()

    (sample,) = [line for line in text.splitlines() if line.startswith("eventflow_expression_errors_total{")]
    # At least once: a workflow task retried after a timeout on a loaded machine runs (and counts) again.
    assert 'journey="br"' in sample and 'step="choose"' in sample and float(sample.rsplit(" ", 1)[1]) >= 1


WAIT_FOR = """
id: wf
version: 1
trigger: {event: CartUpdated}
entry: {rule: one_active, key: payload.cart_id}
steps:
  - id: wait_purchase
    wait_for:
      event: PurchaseCompleted
      timeout: 1d
      received:
        - id: thanks
          send: {channel: email, template: note}
      timed_out:
        - id: nudge
          send: {channel: sms, template: note}
  - id: done
    exit: {reason: finished}
  - id: never
    send: {channel: email, template: note}
"""


def _cart(customer_id: str | None = None) -> CustomerEvent:
    return event("CartUpdated", {"cart_id": "cart-5", "items": [], "cart_total": {"amount": "10.00", "currency": "EUR"}},
                 customer_id=customer_id)


async def test_wait_for_received_takes_the_received_arm(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, WAIT_FOR)
    cart = _cart()
    handle = await start(time_skipping_env.client, queue, snapshot, cart)
    await time_skipping_env.sleep(timedelta(hours=2))
    customer_id = cart.customer.id
    # A purchase of another cart does not match the instance key; the one for cart-5 does.
    await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer_id, order_id="o-1", cart_id="cart-other"))
    await time_skipping_env.sleep(timedelta(hours=1))
    mid = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
    assert mid.current_step == "wait_purchase" and mid.current_step_kind == "wait_for"
    await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer_id, order_id="o-2", cart_id="cart-5"))

    status = await result(handle)

    assert capture.steps(handle.id) == ["thanks"]
    assert status.exit_reason == "finished"
    notes = {v.step_id: v.note for v in status.trail}
    assert notes["wait_purchase"] == "received"


async def test_wait_for_timeout_takes_the_timed_out_arm(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, WAIT_FOR)
    handle = await start(time_skipping_env.client, queue, snapshot, _cart())

    status = await result(handle)

    origin = await _started_at(handle)
    assert capture.steps(handle.id) == ["nudge"]
    assert timedelta(days=1) <= capture.sent[0].at - origin < timedelta(days=1, minutes=1)
    assert status.exit_reason == "finished"


SPLIT = """
id: ab
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
steps:
  - id: experiment
    split:
      variants:
        - {name: A, percent: 30, steps: [{id: a_send, send: {channel: email, template: note}}]}
        - {name: B, percent: 70, steps: [{id: b_send, send: {channel: sms, template: note}}]}
"""


def _customer_in(bucket_range: range, journey_id: str) -> str:
    for _ in range(1000):
        candidate = f"cust-{uuid.uuid4().hex[:8]}"
        if split_bucket(journey_id, candidate) in bucket_range:
            return candidate
    raise AssertionError("no customer found for the bucket range")


@pytest.mark.parametrize(("buckets", "variant", "step"), [(range(0, 30), "A", "a_send"),
                                                          (range(30, 100), "B", "b_send")])
async def test_split_is_a_deterministic_hash_of_customer_and_journey(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path,
        buckets: range, variant: str, step: str) -> None:
    snapshot = compile_journey(tmp_path, SPLIT)
    customer_id = _customer_in(buckets, "ab")
    signup = event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": True}, customer_id=customer_id)

    first = await result(await start(time_skipping_env.client, queue, snapshot, signup))
    again = await result(await start(time_skipping_env.client, queue, snapshot, signup))

    assert first.variants == {"experiment": variant} == again.variants
    assert [s.step_id for s in first.sends] == [step] == [s.step_id for s in again.sends]


def test_split_buckets_spread_over_the_whole_range() -> None:
    buckets = [split_bucket("journey", f"cust-{n}") for n in range(2000)]
    assert min(buckets) == 0 and max(buckets) == 99
    assert 500 < sum(1 for b in buckets if b < 30) < 700


DIGEST = """
id: dg
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: one_active}
steps:
  - id: shipments
    digest:
      event: OrderShipped
      window: 1d
      when: "payload.carrier != 'ignored'"
      send: {channel: email, template: digest}
"""


def _shipped(customer_id: str, order_id: str, carrier: str = "DHL") -> CustomerEvent:
    return event("OrderShipped", {"order_id": order_id, "carrier": carrier, "tracking_number": "T1",
                                  "estimated_delivery_at": None}, customer_id=customer_id)


async def test_digest_collects_matching_events_over_the_window_into_one_send(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, DIGEST)
    trigger = purchase()
    customer_id = trigger.customer.id
    handle = await start(time_skipping_env.client, queue, snapshot, trigger)
    first = _shipped(customer_id, "o-1")
    await time_skipping_env.sleep(timedelta(hours=1))
    await handle.signal(EVENT_SIGNAL, first)
    await handle.signal(EVENT_SIGNAL, first)  # redelivery: same event id
    await handle.signal(EVENT_SIGNAL, _shipped(customer_id, "o-2", carrier="ignored"))
    await time_skipping_env.sleep(timedelta(hours=3))
    await handle.signal(EVENT_SIGNAL, _shipped(customer_id, "o-3"))

    await result(handle)

    origin = await _started_at(handle)
    (sent,) = capture.sent
    assert sent.subject == "2 updates" and sent.body == "o-1;o-3;"
    assert timedelta(days=1) <= sent.at - origin < timedelta(days=1, minutes=1)


async def test_digest_with_no_events_sends_nothing(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, DIGEST)

    status = await result(await start(time_skipping_env.client, queue, snapshot, purchase()))

    assert capture.sent == [] and status.sends == [] and status.finished


TIMED = """
id: timed
version: 1
trigger: {event: OrderShipped}
entry: {rule: once_per_key, key: payload.order_id}
steps:
  - id: next_morning
    delay: {after: 1d, until_local_time: "10:00"}
  - id: morning_note
    send: {channel: email, template: note}
  - id: before_delivery
    delay: {until: payload.estimated_delivery_at, offset: -1d}
  - id: delivery_note
    send: {channel: email, template: note}
"""


async def test_delay_until_local_time_and_until_event_timestamp(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, TIMED)
    now = await time_skipping_env.get_current_time()
    delivery = (now + timedelta(days=5)).replace(microsecond=0)
    shipped = event("OrderShipped", {"order_id": "o-9", "carrier": "UPS", "tracking_number": "1Z",
                                     "estimated_delivery_at": delivery.isoformat()},
                    timezone="America/New_York")
    handle = await start(time_skipping_env.client, queue, snapshot, shipped)

    await result(handle)

    origin = await _started_at(handle)
    morning, before = capture.sent
    local = morning.at.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (10, 0)
    assert timedelta(days=1) <= morning.at - origin <= timedelta(days=2)
    assert abs(before.at - (delivery - timedelta(days=1))) < timedelta(minutes=1)


async def test_delay_until_missing_timestamp_does_not_wait(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    without_morning_delay = TIMED.replace('  - id: next_morning\n    delay: {after: 1d, until_local_time: "10:00"}\n', "")
    assert "next_morning" not in without_morning_delay
    snapshot = compile_journey(tmp_path, without_morning_delay)
    shipped = event("OrderShipped", {"order_id": "o-10", "carrier": "UPS", "tracking_number": "1Z",
                                     "estimated_delivery_at": None})
    handle = await start(time_skipping_env.client, queue, snapshot, shipped)

    await result(handle)

    origin = await _started_at(handle)
    assert [s.step_id for s in capture.sent] == ["morning_note", "delivery_note"]
    assert capture.sent[1].at - origin < timedelta(minutes=1)


EXIT_WHEN = """
id: ew
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
exit:
  - event: SubscriptionChanged
    when: "payload.channel == 'EMAIL' and payload.subscribed == false"
steps:
  - id: wait
    delay: {duration: 2d}
  - id: hello
    send: {channel: email, template: note}
"""


def _subscription(customer_id: str, channel: str, subscribed: bool) -> CustomerEvent:
    return event("SubscriptionChanged", {"channel": channel, "subscribed": subscribed, "source": "prefs"},
                 customer_id=customer_id)


async def test_exit_condition_must_hold_for_an_exit(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, EXIT_WHEN)
    signup = event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": False})
    kept = await start(time_skipping_env.client, queue, snapshot, signup)
    await kept.signal(EVENT_SIGNAL, _subscription(signup.customer.id, "SMS", False))
    ended_signup = event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": False})
    ended = await start(time_skipping_env.client, queue, snapshot, ended_signup)
    await ended.signal(EVENT_SIGNAL, _subscription(ended_signup.customer.id, "EMAIL", False))

    kept_status, ended_status = await result(kept), await result(ended)

    assert kept_status.exit_reason is None and [s.step_id for s in kept_status.sends] == ["hello"]
    assert ended_status.exit_reason == "exit event SubscriptionChanged" and ended_status.sends == []
    assert capture.steps(ended.id) == []


LONG = """
id: long
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: one_active}
steps:
  - {id: s1, send: {channel: email, template: note}}
  - {id: d1, delay: {duration: 1d}}
  - {id: s2, send: {channel: email, template: note}}
  - id: collect
    digest: {event: OrderShipped, window: 2d, send: {channel: email, template: digest}}
  - {id: d2, delay: {duration: 1d}}
  - {id: s3, send: {channel: email, template: note}}
"""


async def test_continue_as_new_carries_position_context_sends_and_a_digest_in_progress(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, LONG)
    trigger = purchase(locale="de")
    handle = await start(time_skipping_env.client, queue, snapshot, trigger, continue_as_new_after=2)
    await time_skipping_env.sleep(timedelta(days=1, hours=6))
    first, second = _shipped(trigger.customer.id, "o-1"), _shipped(trigger.customer.id, "o-2")
    for shipped in (first, second, first):  # the third is a redelivery across runs
        await handle.signal(EVENT_SIGNAL, shipped)
        await time_skipping_env.sleep(timedelta(hours=2))

    status = await result(handle)

    assert [s.step_id for s in capture.sent] == ["s1", "s2", "collect", "s3"]
    assert capture.sent[2].subject == "2 updates" and capture.sent[2].body == "o-1;o-2;"
    assert capture.sent[3].locale == "de"
    assert status.runs >= 3
    assert [s.step_id for s in status.sends] == ["s1", "s2", "collect", "s3"]
    origin = await _started_at(time_skipping_env.client.get_workflow_handle(
        handle.id, run_id=handle.first_execution_run_id))
    assert timedelta(days=4) <= capture.sent[3].at - origin < timedelta(days=4, minutes=5)


async def test_definition_edited_while_instances_run(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    old = compile_journey(tmp_path / "v1", POST_PURCHASE)
    edited = POST_PURCHASE.replace("version: 1", "version: 2").replace(
        "  - id: review\n    send: {channel: email, template: note}",
        "  - id: review_v2\n    send: {channel: sms, template: note}")
    new = compile_journey(tmp_path / "v2", edited)
    assert old["content_hash"] != new["content_hash"]
    running = await start(time_skipping_env.client, queue, old, purchase(order_id="o-old"))
    await time_skipping_env.sleep(timedelta(days=1))

    later = await start(time_skipping_env.client, queue, new, purchase(order_id="o-new"))
    old_status, new_status = await result(running), await result(later)

    assert (old_status.journey_version, new_status.journey_version) == (1, 2)
    assert [s.step_id for s in old_status.sends] == ["thanks", "review"]
    assert [(s.step_id, s.channel) for s in new_status.sends] == [("thanks", "email"), ("review_v2", "sms")]
    assert old_status.content_hash == old["content_hash"] and new_status.content_hash == new["content_hash"]
    assert capture.steps(running.id) == ["thanks", "review"]


async def test_redelivered_signal_is_ignored_and_exit_step_stops(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, WAIT_FOR)
    cart = _cart()
    handle = await start(time_skipping_env.client, queue, snapshot, cart)
    bought = purchase(customer_id=cart.customer.id, cart_id="cart-5")
    await handle.signal(EVENT_SIGNAL, bought)
    await handle.signal(EVENT_SIGNAL, bought)

    status = await result(handle)

    assert capture.steps(handle.id) == ["thanks"], (capture.steps(handle.id), [(v.step_id, v.at) for v in status.trail])
    assert "never" not in [v.step_id for v in status.trail]
    assert status.exit_reason == "finished"


SEND_THEN_WAIT = """
id: sw
version: 1
trigger: {event: CartUpdated}
entry: {rule: one_active, key: payload.cart_id}
steps:
  - {id: hello, send: {channel: email, template: note}}
  - id: wait_purchase
    wait_for:
      event: PurchaseCompleted
      timeout: 1d
      received:
        - {id: thanks, send: {channel: email, template: note}}
      timed_out:
        - {id: nudge, send: {channel: sms, template: note}}
"""

DELAY_THEN_WAIT = SEND_THEN_WAIT.replace("  - {id: hello, send: {channel: email, template: note}}",
                                         "  - {id: pause, delay: {duration: 1h}}")


@pytest.mark.parametrize(("definition", "expected"), [
    (WAIT_FOR, ["thanks"]), (SEND_THEN_WAIT, ["hello", "thanks"]), (DELAY_THEN_WAIT, ["nudge"])],
    ids=["wait-first", "send-before-the-wait", "delay-before-the-wait"])
async def test_an_event_delivered_with_the_start_counts_for_the_next_wait_unless_a_delay_comes_first(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path,
        definition: str, expected: list[str]) -> None:
    # Signal-with-start puts the purchase in the instance's first task, before the interpreter has
    # reached any step: the race a purchase published right after its cart update runs in production.
    snapshot = compile_journey(tmp_path, definition)
    cart = _cart()
    bought = purchase(customer_id=cart.customer.id, cart_id="cart-5")
    handle = await start(time_skipping_env.client, queue, snapshot, cart, with_event=bought)

    status = await handle.result()

    assert capture.steps(handle.id) == expected
    assert status.finished and "never" not in [v.step_id for v in status.trail]


def test_utc_helpers_are_timezone_aware() -> None:
    from journeys.timing import next_local_time

    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Berlin switches to summer time on the 29th
    landed = next_local_time(after, "10:00", "Europe/Berlin")
    assert landed == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
    assert next_local_time(after, "10:00", "Not/AZone") == datetime(2026, 3, 29, 10, 0, tzinfo=UTC)


async def test_exit_event_delivered_with_the_start_is_not_lost(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, POST_PURCHASE)
    trigger = purchase(order_id="ord-fast")
    refund = event("OrderRefunded", {"order_id": "ord-fast", "amount": {"amount": "49.90", "currency": "EUR"},
                                     "reason": None}, customer_id=trigger.customer.id)

    handle = await start(time_skipping_env.client, queue, snapshot, trigger, with_event=refund)
    status = await handle.result()

    assert status.exit_reason == "exit event OrderRefunded"
    assert capture.steps(handle.id) == [] and status.sends == []
