"""The router compiled from definitions: trigger filters, listeners of waits and digests, exits."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from events.model import CustomerEvent
from journeys import Router, SignalJourney, StartJourney, load_all
from journeys.expressions import ExpressionMetrics
from journeys.loader import validate_folder
from journeys.model import EntryRule, JourneyDefinition
from journeys.steps import ExitStep
from tests.workflows.journey_harness import compile_journey, event, purchase

LISTENING = """
id: shipping
version: 3
trigger: {event: PurchaseCompleted}
entry: {rule: once_per_key, key: payload.order_id}
exit:
  - event: OrderRefunded
steps:
  - id: wait_ship
    wait_for:
      event: OrderShipped
      timeout: 2d
      received:
        - id: shipped_digest
          digest: {event: OrderShipped, window: 1d, send: {channel: email, template: digest}}
  - id: refund_wait
    wait_for: {event: OrderRefunded, timeout: 1d}
"""


def _cart(amount: str) -> CustomerEvent:
    return event("CartUpdated", {"cart_id": "cart-1", "items": [], "cart_total": {"amount": amount, "currency": "EUR"}},
                 customer_id="cust-1")


def test_trigger_filter_decides_the_start() -> None:
    router = Router(load_all())

    assert router.route(_cart("0.00")) == []
    (action,) = router.route(_cart("12.00"))
    assert isinstance(action, StartJourney)
    assert action.workflow_id == "journey:abandoned_cart:cust-1" and action.journey_id == "abandoned_cart"
    assert action.reject_reuse is False  # one_active: a finished instance's id may be reused
    assert action.snapshot["trigger_filter"] == "payload.total.amount > 0".replace("total", "cart_total")


def test_a_purchase_starts_post_purchase_and_ends_the_cart_reminder() -> None:
    actions = Router(load_all()).route(purchase(customer_id="cust-2", order_id="ord-2"))

    starts = [a for a in actions if isinstance(a, StartJourney)]
    signals = [a for a in actions if isinstance(a, SignalJourney)]
    assert [a.workflow_id for a in starts] == ["journey:post_purchase:cust-2:ord-2"]
    assert [a.workflow_id for a in signals] == ["journey:abandoned_cart:cust-2"]


def test_wait_for_and_digest_events_are_routed_to_the_instance_once(tmp_path: Path) -> None:
    compile_journey(tmp_path, LISTENING)
    (definition,) = validate_folder(tmp_path).definitions
    router = Router([definition])
    shipped = event("OrderShipped", {"order_id": "ord-5", "carrier": "DHL", "tracking_number": "1",
                                     "estimated_delivery_at": None}, customer_id="cust-5")
    refunded = event("OrderRefunded", {"order_id": "ord-5", "reason": None,
                                       "amount": {"amount": "1.00", "currency": "EUR"}}, customer_id="cust-5")

    assert router.event_types == {"PurchaseCompleted", "OrderShipped", "OrderRefunded"}
    assert router.route(shipped) == [SignalJourney("journey:shipping:cust-5:ord-5", "shipping")]
    # OrderRefunded is both an exit and a wait_for: one signal, not two.
    assert router.route(refunded) == [SignalJourney("journey:shipping:cust-5:ord-5", "shipping")]
    snapshot = definition.snapshot()
    assert {(listener["event_type"], listener["key_path"]) for listener in snapshot["listeners"]} == {
        ("OrderShipped", "payload.order_id"), ("OrderRefunded", "payload.order_id")}
    # The interpreter matches on the same key the router addressed by.
    assert snapshot["steps"][0]["wait_for"]["key"] == "payload.order_id"


def test_snapshot_hash_changes_with_a_template_edit(tmp_path: Path) -> None:
    first = compile_journey(tmp_path / "a", LISTENING)
    from tests.workflows.journey_harness import DEFAULT_TEMPLATES

    edited = {**DEFAULT_TEMPLATES, "digest": {**DEFAULT_TEMPLATES["digest"], "channels": {
        "email": {"en": {"subject": "Edited {{ digest.count }}", "body": "x"}}}}}
    second = compile_journey(tmp_path / "b", LISTENING, edited)
    assert first["version"] == second["version"] and first["content_hash"] != second["content_hash"]
    assert second["templates"]["digest"]["variants"]["email"]["en"]["subject"].startswith("Edited")


def test_a_trigger_filter_that_fails_on_the_data_starts_nothing_and_is_counted() -> None:
    # The validator rejects this filter for PurchaseCompleted; a definition built without it (or an
    # event that does not look like its schema) must still never make routing raise.
    definition = JourneyDefinition(id="mistyped", version=1, trigger_event="PurchaseCompleted",
                                   steps=(ExitStep("only"),), trigger_filter="payload.total in customer",
                                   entry_rule=EntryRule.ONE_ACTIVE)
    registry = CollectorRegistry()
    router = Router([definition], on_error=ExpressionMetrics(registry))

    assert router.route(purchase(customer_id="cust-9")) == []
    assert router.route(purchase(customer_id="cust-9")) == []
    assert registry.get_sample_value("eventflow_expression_errors_total",
                                     {"journey": "mistyped", "step": "trigger"}) == 2
