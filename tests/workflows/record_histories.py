"""Records interpreter histories for the replay test: ``python -m tests.workflows.record_histories [PREFIX [SCENARIO...]]``.

Runs the shipped sample journeys and the step-type scenarios on the time-skipping test server
and writes each run's history to ``tests/workflows/histories/<PREFIX><scenario>.json``. Keep the
histories of earlier releases (record new ones under a new prefix, e.g. ``snapshot2-``): they are
what proves that journeys started by those releases, with their snapshot formats, still replay. Re-record only
when an interpreter change is *meant* to be incompatible (and running journeys are handled,
e.g. with ``workflow.patched``); otherwise the replay test is what tells you a change breaks
journeys that are already running.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from devstack.provision import TEST_SERVER_STARTUP, test_server
from journeys.loader import load_all
from tests.workflows import test_journey_steps as scenarios
from tests.workflows.journey_harness import Capture, compile_journey, event, purchase, start, worker
from workflows.journey import EVENT_SIGNAL

HISTORIES = Path(__file__).resolve().parent / "histories"

Scenario = Callable[[WorkflowEnvironment, str], Awaitable[list[WorkflowHandle[Any, Any]]]]


def _sample(journey_id: str) -> dict[str, Any]:
    (definition,) = [d for d in load_all() if d.id == journey_id]
    return definition.snapshot()


def _compiled(text: str) -> dict[str, Any]:
    return compile_journey(Path(tempfile.mkdtemp()), text)


async def post_purchase(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    return [await start(env.client, queue, _sample("post_purchase"), purchase(locale="de"))]


async def post_purchase_refunded(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    trigger = purchase(order_id="ord-r")
    handle = await start(env.client, queue, _sample("post_purchase"), trigger)
    await env.sleep(timedelta(days=1))
    await handle.signal(EVENT_SIGNAL, event("OrderRefunded", {"order_id": "ord-r", "reason": None,
                                                              "amount": {"amount": "49.90", "currency": "EUR"}},
                                            customer_id=trigger.customer.id))
    return [handle]


async def abandoned_cart(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    cart = event("CartUpdated", {"cart_id": "cart-1", "items": [],
                                 "cart_total": {"amount": "20.00", "currency": "EUR"}})
    return [await start(env.client, queue, _sample("abandoned_cart"), cart)]


async def abandoned_cart_bought(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    cart = event("CartUpdated", {"cart_id": "cart-1", "items": [],
                                 "cart_total": {"amount": "20.00", "currency": "EUR"}})
    handle = await start(env.client, queue, _sample("abandoned_cart"), cart)
    await env.sleep(timedelta(hours=3))
    await handle.signal(EVENT_SIGNAL, purchase(customer_id=cart.customer.id, cart_id="cart-1"))
    return [handle]


async def welcome_series(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    signup = event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": True}, timezone="Asia/Tokyo")
    return [await start(env.client, queue, _sample("welcome_series"), signup)]


async def branch_and_wait_for(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    handles = [await start(env.client, queue, _compiled(scenarios.BRANCH), purchase(amount=amount))
               for amount in ("150.00", "5.00")]
    timed_out = await start(env.client, queue, _compiled(scenarios.WAIT_FOR), scenarios._cart())
    cart = scenarios._cart()
    received = await start(env.client, queue, _compiled(scenarios.WAIT_FOR), cart)
    await env.sleep(timedelta(hours=1))
    await received.signal(EVENT_SIGNAL, purchase(customer_id=cart.customer.id, cart_id="cart-5"))
    return [*handles, timed_out, received]


async def split_and_digest(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    signup = event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": False})
    split = await start(env.client, queue, _compiled(scenarios.SPLIT), signup)
    trigger = purchase()
    digest = await start(env.client, queue, _compiled(scenarios.DIGEST), trigger)
    await env.sleep(timedelta(hours=2))
    await digest.signal(EVENT_SIGNAL, scenarios._shipped(trigger.customer.id, "o-1"))
    await digest.signal(EVENT_SIGNAL, scenarios._shipped(trigger.customer.id, "o-2"))
    timed = await start(env.client, queue, _compiled(scenarios.TIMED), event(
        "OrderShipped", {"order_id": "o-3", "carrier": "UPS", "tracking_number": "1Z",
                         "estimated_delivery_at": None}, timezone="Europe/Berlin"))
    return [split, digest, timed]


async def continue_as_new(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    trigger = purchase()
    handle = await start(env.client, queue, _compiled(scenarios.LONG), trigger, continue_as_new_after=2)
    await env.sleep(timedelta(days=1, hours=6))
    await handle.signal(EVENT_SIGNAL, scenarios._shipped(trigger.customer.id, "o-1"))
    return [handle]


async def goals_and_delivery(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    from activities.outcomes import DELIVERY_SIGNAL, DeliveryOutcome
    from tests.workflows import test_journey_goals as goals

    opened = await start(env.client, queue, _compiled(goals.NOT_OPENED), goals.signup())
    await opened.signal(DELIVERY_SIGNAL, goals.report(opened, "welcome", DeliveryOutcome.OPENED))
    not_opened = await start(env.client, queue, _compiled(goals.NOT_OPENED), goals.signup())
    bounced = await start(env.client, queue, _compiled(goals.LATE_BOUNCE), goals.signup())
    await env.sleep(timedelta(minutes=5))
    await bounced.signal(DELIVERY_SIGNAL, goals.report(bounced, "welcome", DeliveryOutcome.BOUNCED))
    handles = [opened, not_opened, bounced]
    for held_out in (False, True):
        customer = goals._customer(held_out)
        handle = await start(env.client, queue, _compiled(goals.GOAL), goals.signup(customer))
        await env.sleep(timedelta(hours=2))
        await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer, amount="50.00"))
        handles.append(handle)
    control = await start(env.client, queue, _compiled(goals.SPLIT_CONTROL), goals.signup())
    return [*handles, control]


WEBHOOK = """
id: webhook_then_send
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: every_time}
steps:
  - id: enrich
    webhook:
      method: GET
      url: "https://crm.example.com/customers/{{ customer.id }}"
      headers: [{name: Authorization, secret: crm_token}]
      save_as: crm
  - id: tell
    send: {channel: email, template: tier_note}
"""
TIER_NOTE = {"id": "tier_note", "default_locale": "en", "channels": {
    "email": {"en": {"subject": "Your tier", "body": "Tier {{ webhooks.crm.tier }}"}}}}


async def webhook(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    from tests.workflows.journey_harness import DEFAULT_TEMPLATES

    snapshot = compile_journey(Path(tempfile.mkdtemp()), WEBHOOK, {**DEFAULT_TEMPLATES, "tier_note": TIER_NOTE})
    return [await start(env.client, queue, snapshot, purchase())]


async def event_with_start(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """A purchase in the instance's first task (signal-with-start), before a wait and before a send and a wait."""
    handles: list[WorkflowHandle[Any, Any]] = []
    for definition in (scenarios.WAIT_FOR, scenarios.SEND_THEN_WAIT):
        cart = scenarios._cart()
        handles.append(await start(env.client, queue, _compiled(definition), cart,
                                   with_event=purchase(customer_id=cart.customer.id, cart_id="cart-5")))
    return handles


SUPPRESSED_CUSTOMER = "customer-with-a-bounced-email"
SUPPRESSED_FALLBACK = """
id: suppressed_fallback
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: every_time}
steps:
  - {id: receipt, send: {channel: email, template: note, fallback: sms}}
"""


async def suppressed_fallback(env: WorkflowEnvironment, queue: str) -> list[WorkflowHandle[Any, Any]]:
    """A send whose email address is suppressed (the worker's capture answers so), with an SMS fallback."""
    return [await start(env.client, queue, _compiled(SUPPRESSED_FALLBACK), purchase(customer_id=SUPPRESSED_CUSTOMER))]


SCENARIOS: dict[str, Scenario] = {
    "post_purchase": post_purchase,
    "post_purchase_refunded": post_purchase_refunded,
    "abandoned_cart": abandoned_cart,
    "abandoned_cart_bought": abandoned_cart_bought,
    "welcome_series": welcome_series,
    "branch_and_wait_for": branch_and_wait_for,
    "split_and_digest": split_and_digest,
    "continue_as_new": continue_as_new,
    "goals_and_delivery": goals_and_delivery,
    "webhook": webhook,
    "event_with_start": event_with_start,
    "suppressed_fallback": suppressed_fallback,
}


async def _all_runs(client: Client, handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """Every run of the workflow, oldest first, as (run id, history JSON): follows continue-as-new."""
    found: list[tuple[str, str]] = []
    run_id: str | None = handle.first_execution_run_id or handle.result_run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        found.append((history.run_id, history.to_json()))
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.HasField("workflow_execution_continued_as_new_event_attributes") else None)
    return found


async def record(folder: Path = HISTORIES, prefix: str = "", only: list[str] | None = None) -> list[Path]:
    """Runs every scenario (or those named in ``only``) and writes the histories (file names start
    with ``prefix``); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server()), test_server_startup_timeout=TEST_SERVER_STARTUP)
    try:
        capture = Capture(suppressed={(SUPPRESSED_CUSTOMER, "email")})
        queue = f"record-{uuid.uuid4().hex[:8]}"
        async with worker(env.client, queue, capture):
            for name, scenario in SCENARIOS.items():
                if only and name not in only:
                    continue
                handles = await scenario(env, queue)
                for index, handle in enumerate(handles):
                    await handle.result()
                    for run_index, (_, text) in enumerate(await _all_runs(env.client, handle)):
                        path = folder / f"{prefix}{name}-{index}-run{run_index}.json"
                        path.write_text(text)
                        written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for written_path in asyncio.run(record(prefix=sys.argv[1] if len(sys.argv) > 1 else "", only=sys.argv[2:])):
        print(written_path)
