"""Built-in sample events for the demo and the tests: fresh ids every call, example.com addresses."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

_CUSTOMERS = [
    {"id": "cust-ana", "email": "ana@example.com", "phone": "+4915112345601", "timezone": "Europe/Berlin",
     "locale": "de", "first_name": "Ana"},
    {"id": "cust-ben", "email": "ben@example.com", "phone": "+14155550102", "timezone": "America/New_York",
     "locale": "en", "first_name": "Ben"},
    {"id": "cust-chloe", "email": "chloe@example.com", "phone": "+33612345603", "timezone": "Europe/Paris",
     "locale": "en", "first_name": "Chloé"},
]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(event_type: str, customer: dict[str, Any], payload: dict[str, Any], *,
          event_id: str | None = None) -> dict[str, Any]:
    """One event in JSON form (as in a JSON Lines file for ``eventflow produce --file``)."""
    return {"event_id": event_id or str(uuid.uuid4()), "event_type": event_type, "occurred_at": now_iso(),
            "customer": customer, "payload": payload}


def purchase(customer: dict[str, Any], order_id: str | None = None, amount: str = "49.90") -> dict[str, Any]:
    order = order_id or f"ord-{uuid.uuid4().hex[:8]}"
    return event("PurchaseCompleted", customer, {
        "order_id": order, "cart_id": None,
        "items": [{"sku": "SKU-1", "name": "Trail shoes", "quantity": 1,
                   "unit_price": {"amount": amount, "currency": "EUR"}}],
        "total": {"amount": amount, "currency": "EUR"},
    })


def customer(customer_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A sample customer with a fresh id unless one is given."""
    base = dict(_CUSTOMERS[0])
    base.update(id=customer_id or f"cust-{uuid.uuid4().hex[:10]}", **overrides)
    return base


def signup(customer: dict[str, Any], *, marketing_opt_in: bool = True) -> dict[str, Any]:
    return event("UserSignedUp", customer, {"signup_source": "web", "marketing_opt_in": marketing_opt_in})


def cart_update(customer: dict[str, Any], cart_id: str | None = None, amount: str = "89.00") -> dict[str, Any]:
    return event("CartUpdated", customer, {
        "cart_id": cart_id or f"cart-{uuid.uuid4().hex[:8]}",
        "items": [{"sku": "SKU-2", "name": "Rain jacket", "quantity": 1,
                   "unit_price": {"amount": amount, "currency": "EUR"}}],
        "cart_total": {"amount": amount, "currency": "EUR"},
    })


def demo_events() -> list[dict[str, Any]]:
    """The demo's events: a purchase per sample customer, a sign-up of a new customer, an abandoned
    cart (its reminder waits an hour) and a profile update (it updates the customer's profile; no
    journey listens to it)."""
    events = [purchase(c) for c in _CUSTOMERS]
    newcomer = customer(first_name="Dora", email="dora@example.com", locale="en", timezone="Europe/Lisbon")
    events.append(signup(newcomer))
    events.append(cart_update(_CUSTOMERS[1]))
    events.append(event("ProfileUpdated", _CUSTOMERS[0], {"changed_fields": ["locale"]}))
    return events
