"""Eventflow's payload converter writes exactly the SDK's bytes, without its deep copies, and reads
back exactly the SDK's values, without resolving type hints for every payload.

(A set's elements are written in iteration order by both, which the SDK's copy may change; no
Eventflow payload holds a set, so the values here hold none.)"""

from __future__ import annotations

import dataclasses
import typing
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.converter import DataConverter

from activities.notifications import SendNotificationInput
from core.payloads import PayloadConverter
from events import samples
from events.model import Customer, CustomerEvent
from journeys import load_all
from workflows.journey import JourneyInput
from workflows.sending import SendRecord

SDK = DataConverter.default.payload_converter
OURS = PayloadConverter()


class Colour(StrEnum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Leaf:
    at: datetime
    colour: Colour
    ids: tuple[str, ...]
    key: uuid.UUID


@dataclasses.dataclass
class Node:
    name: str
    value: Any
    leaves: list[Leaf]
    by_name: dict[str, Leaf]
    pair: tuple[int, str]
    child: Node | None = None
    later: int = dataclasses.field(default=0, init=False)


def _journey_input() -> JourneyInput:
    snapshot = next(d for d in load_all() if d.id == "post_purchase").snapshot()
    raw = samples.purchase(samples.customer(), order_id="ord-1")
    customer = Customer(**{k: raw["customer"].get(k) for k in ("id", "email", "phone", "first_name")})
    event = CustomerEvent(event_id="e-1", event_type="PurchaseCompleted", occurred_at="2026-01-02T00:00:00+00:00",
                          customer=customer, payload={"order_id": "ord-1", "items": [{"sku": "a", "qty": 2}]})
    return JourneyInput.starting(snapshot, event)


def test_a_journeys_start_input_is_the_sdks_bytes() -> None:
    value = _journey_input()

    assert OURS.to_payloads([value]) == SDK.to_payloads([value])
    assert OURS.from_payloads(OURS.to_payloads([value]), [JourneyInput]) == SDK.from_payloads(
        SDK.to_payloads([value]), [JourneyInput])


def test_a_send_and_its_record_are_the_sdks_bytes() -> None:
    send = SendNotificationInput(idempotency_key="wf/s", channel="email", customer=Customer(id="c"), template_id="t",
                                 locale="en", body_template="Hi", subject_template=None, context={"order": {"n": 1}},
                                 variants={"en": {"body": "Hi"}})
    record = SendRecord("s", "email", "t", "sent", "sendgrid", "m-1")

    assert OURS.to_payloads([send, record]) == SDK.to_payloads([send, record])


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=10)
_leaf = st.builds(Leaf, at=st.datetimes(timezones=st.just(UTC)), colour=st.just(Colour.RED),
                  ids=st.lists(st.text(max_size=3), max_size=2).map(tuple), key=st.uuids())
_node = st.recursive(
    st.builds(Node, name=st.text(max_size=4), value=_json, leaves=st.lists(_leaf, max_size=2),
              by_name=st.dictionaries(st.text(max_size=3), _leaf, max_size=2), pair=st.tuples(st.integers(), st.text())),
    lambda inner: st.builds(Node, name=st.text(max_size=4), value=_json, leaves=st.lists(_leaf, max_size=2),
                            by_name=st.dictionaries(st.text(max_size=3), _leaf, max_size=2),
                            pair=st.tuples(st.integers(), st.text()), child=inner),
    max_leaves=3)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(_node)
def test_any_nesting_of_dataclasses_is_the_sdks_bytes_and_reads_back_as_the_sdks_value(node: Node) -> None:
    payloads = SDK.to_payloads([node])

    assert OURS.to_payloads([node]) == payloads
    assert OURS.from_payloads(payloads, [Node]) == SDK.from_payloads(payloads, [Node])


def test_a_value_the_sdk_refuses_is_refused_the_same_way() -> None:
    (payload,) = SDK.to_payloads([{"name": "n", "value": 1, "leaves": "not a list", "by_name": {}, "pair": [1, "a"]}])

    with pytest.raises(TypeError) as ours:
        OURS.from_payloads([payload], [Node])
    with pytest.raises(TypeError) as sdk:
        SDK.from_payloads([payload], [Node])
    assert str(ours.value) == str(sdk.value)
    assert str(ours.value.__cause__) == str(sdk.value.__cause__)


def test_a_classs_field_types_are_resolved_once_for_every_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The workflow worker makes a payload converter per workflow instance: a cache per converter was no cache.
    @dataclasses.dataclass(frozen=True)
    class Fresh:
        name: str
        leaf: Leaf | None = None

    resolved: list[type] = []
    real = typing.get_type_hints

    def counting(cls: Any) -> dict[str, Any]:
        resolved.append(cls)
        return real(cls)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    [payload] = OURS.to_payloads([Fresh("a")])
    for _ in range(3):
        assert PayloadConverter().from_payloads([payload], [Fresh]) == [Fresh("a")]
    assert resolved.count(Fresh) == 1
