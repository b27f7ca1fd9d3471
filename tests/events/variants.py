"""Older and newer versions of the envelope schema, as upstream teams would evolve it.

Each is the current envelope (every named type inlined, as a registry stores it) with edits.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from events.schemas import NAMESPACE, load


def current() -> dict[str, Any]:
    """The current envelope, expanded."""
    return json.loads(load().expanded_json())


def _field(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


def _branch(envelope: dict[str, Any], short: str) -> dict[str, Any]:
    return next(b for b in _field(envelope, "payload")["type"] if b["name"] == f"{NAMESPACE}.{short}" or b["name"] == short)


def older() -> dict[str, Any]:
    """Version 1: the customer block had no first_name/locale yet; OrderRefunded had no reason."""
    schema = copy.deepcopy(current())
    customer = _field(schema, "customer")["type"]
    customer["fields"] = [f for f in customer["fields"] if f["name"] not in ("first_name", "locale")]
    refunded = _branch(schema, "OrderRefunded")
    refunded["fields"] = [f for f in refunded["fields"] if f["name"] != "reason"]
    return schema


def newer() -> dict[str, Any]:
    """Version 3: a loyalty tier on the customer, a gift flag on purchases (both optional),
    OrderShipped lost its optional estimated_delivery_at, and a new event type."""
    schema = copy.deepcopy(current())
    customer = _field(schema, "customer")["type"]
    customer["fields"].append({"name": "loyalty_tier", "type": ["null", "string"], "default": None,
                               "doc": "Loyalty programme tier, if enrolled."})
    purchase = _branch(schema, "PurchaseCompleted")
    purchase["fields"].append({"name": "gift", "type": "boolean", "default": False, "doc": "Bought as a gift."})
    shipped = _branch(schema, "OrderShipped")
    shipped["fields"] = [f for f in shipped["fields"] if f["name"] != "estimated_delivery_at"]
    _field(schema, "payload")["type"].append({
        "type": "record", "name": "LoyaltyPointsEarned", "namespace": NAMESPACE, "doc": "Points were earned.",
        "fields": [{"name": "points", "type": "int", "doc": "Points earned."}]})
    return schema


def incompatible() -> dict[str, Any]:
    """A breaking change: a required customer field without a default."""
    schema = copy.deepcopy(current())
    _field(schema, "customer")["type"]["fields"].append({"name": "segment", "type": "string", "doc": "Segment."})
    return schema
