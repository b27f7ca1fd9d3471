"""Records a ``CustomerPreferences`` history for the replay test:
``python -m tests.workflows.record_preference_histories TEMPORAL_ADDRESS NAME``.

Run it with an older checkout on ``PYTHONPATH`` to record what that release wrote
(``main-8d044fb-before-delivery-feedback`` was recorded so), and with this one to record the
delivery-feedback handlers too (``with-delivery-feedback``).
It reserves and completes sends, records an opt-out and an opt-in, and (where this checkout has
them) applies delivery reports and a STOP; then terminates the workflow and writes its history.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities.ledger import Completion, ReserveRequest
from activities.outcomes import LedgerState
from events.model import Customer, CustomerEvent
from workflows.preferences import CustomerPreferences, preferences_workflow_id
from workflows.preferences_client import PreferencesStore, preferences_state, record_subscription_change

FOLDER = Path(__file__).resolve().parent / "histories" / "preferences"


async def _feedback(client: Client, queue: str, customer: str, key: str) -> None:
    try:
        from activities.outcomes import DeliveryOutcome, DeliveryReport
        from workflows import suppression as sup
    except ImportError:  # an older checkout: no delivery feedback yet
        return
    handle = client.get_workflow_handle(preferences_workflow_id(customer))
    for index, outcome in enumerate((DeliveryOutcome.DELIVERED, DeliveryOutcome.BOUNCED)):
        report = DeliveryReport(key, customer, "email", "sendgrid", outcome, "2026-12-01T10:00:00+00:00",
                                error_code="bounce", report_id=f"r{index}")
        await handle.signal(sup.DELIVERY_REPORT_SIGNAL, sup.DeliveryFeedback(report, "a" * 32))
    await handle.signal(sup.CONTACT_KEYWORD_SIGNAL, sup.ContactKeyword(
        "sms", "b" * 32, sup.KeywordAction.OPT_OUT, "2026-12-01T10:00:00+00:00", "k1"))


async def main(address: str, name: str) -> Path:
    client = await Client.connect(address)
    unique = uuid.uuid4().hex[:8]
    queue, customer = f"record-prefs-{unique}", f"c-record-{unique}"
    store = PreferencesStore(client, queue)
    async with Worker(client, task_queue=queue, workflows=[CustomerPreferences]):
        for step in ("one", "two"):
            key = f"journey:record:{unique}/{step}"
            await store.reserve(ReserveRequest(key, customer, "email", attempt=1, lease_seconds=30))
            await store.complete(Completion(key, customer, "email", LedgerState.DELIVERED, "sendgrid", "m1",
                                            attempt=1))
        for subscribed, second in ((False, 1), (True, 2)):
            await record_subscription_change(client, CustomerEvent(
                uuid.uuid4().hex, "SubscriptionChanged", f"2026-12-01T09:00:0{second}+00:00", Customer(customer),
                {"channel": "sms", "subscribed": subscribed}), queue)
        await _feedback(client, queue, customer, f"journey:record:{unique}/one")
        await store.reserve(ReserveRequest(f"journey:record:{unique}/three", customer, "sms", attempt=1,
                                           lease_seconds=30))
        await preferences_state(client, customer)  # every signal above has been applied
        handle = client.get_workflow_handle(preferences_workflow_id(customer))
        await handle.terminate("recorded")
        history = await handle.fetch_history()
    path = FOLDER / f"{name}.json"
    path.write_text(history.to_json())
    return path


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], sys.argv[2])))
