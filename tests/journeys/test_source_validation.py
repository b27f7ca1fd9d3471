"""``eventflow journeys validate`` checks journeys on source events against the sources' own schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventflow.cli import main
from journeys.loader import validate_folder
from tests.events.shop import shop_journeys


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return shop_journeys(tmp_path / "journeys", "orders")


def _set_filter(root: Path, expression: str) -> Path:
    path = root / "definitions" / "big_order.yaml"
    lines = [f"  filter: {expression}" if line.strip().startswith("filter:") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _messages(root: Path) -> list[str]:
    return [str(p) for p in validate_folder(root).problems]


def test_the_shop_journeys_validate_against_the_source_schemas(shop: Path) -> None:
    report = validate_folder(shop)
    assert report.problems == ()
    assert sorted(d.id for d in report.definitions) == ["big_order", "shipped"]


def test_a_filter_on_a_field_the_schema_lacks_is_rejected_with_file_and_line(
        shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _set_filter(shop, 'payload.coupon_code == "SPRING"')
    assert _messages(shop) == [f"{path}:5: expression 'payload.coupon_code == \"SPRING\"': payload has no field "
                               "'coupon_code'"]
    assert main(["journeys", "validate", "--dir", str(shop)]) != 0
    printed = capsys.readouterr()
    assert f"{path}:5: expression" in printed.out + printed.err


@pytest.mark.parametrize(("expression", "problem"), [
    ('payload.status == "SHIPPED"', "payload.status is an enum of CONFIRMED, PENDING; 'SHIPPED' is none of them"),
    ('payload.status in ["CONFIRMED", "GONE"]', "payload.status is an enum of CONFIRMED, PENDING; 'GONE' is none"),
    ('payload.item_count >= "many"', "payload.item_count is a number, never the string 'many'"),
    ("payload.gift_wrap == 1", "payload.gift_wrap is a boolean, never the number 1"),
    ("payload.buyer > 3", "'>' compares numbers or strings, but payload.buyer is a record"),
])
def test_comparisons_the_schema_types_cannot_satisfy_are_rejected(shop: Path, expression: str, problem: str) -> None:
    path = _set_filter(shop, expression)
    messages = _messages(shop)
    assert len(messages) == 1 and messages[0].startswith(f"{path}:5: ") and problem in messages[0], messages


@pytest.mark.parametrize("expression", [
    'payload.status in ["CONFIRMED", "PENDING"]', "payload.total > 100", 'payload.item_count == "3"',
    "payload.gift_wrap == true and customer.email != null",
])
def test_comparisons_that_can_match_pass(shop: Path, expression: str) -> None:
    _set_filter(shop, expression)
    assert _messages(shop) == []


def test_a_template_reading_a_field_the_event_lacks_is_rejected(shop: Path) -> None:
    template = shop / "templates" / "shipment_on_its_way.yaml"
    template.write_text(template.read_text().replace("{{ payload.carrier }}", "{{ payload.tracking.url }}"))
    messages = _messages(shop)
    assert len(messages) == 1 and messages[0].startswith(f"{template}:7: "), messages
    assert "does not render with sample data" in messages[0] and "tracking" in messages[0]


def test_a_source_file_breaking_its_schema_names_file_and_line(shop: Path) -> None:
    sources = shop / "sources.yaml"
    sources.write_text(sources.read_text().replace("format: avro", "format: protobuf"))
    messages = _messages(shop)
    assert messages and messages[0].startswith(f"{sources}:12: sources.1.format: 'protobuf' is not one of"), messages


def test_an_unknown_event_type_names_the_source_types(shop: Path) -> None:
    path = shop / "definitions" / "shipped.yaml"
    path.write_text(path.read_text().replace("event: ShipmentDispatched", "event: ShipmentSent"))
    messages = _messages(shop)
    # (the templates of a journey whose trigger is unknown cannot be checked, and say so too)
    assert messages[0].startswith(f"{path}:4: unknown event type 'ShipmentSent'"), messages
    assert "OrderPlaced" in messages[0] and "ShipmentDispatched" in messages[0] and "PurchaseCompleted" in messages[0]


@pytest.mark.parametrize(("block", "line", "problem"), [
    ('exit:\n  - event: OrderCancelled\n    when: payload.reason == "fraud"\n', 11,
     "expression 'payload.reason == \"fraud\"': payload has no field 'reason'"),
    ('exit:\n  - event: OrderCancelled\n    key: payload.order_ref\n', 11, "payload has no field 'order_ref'"),
])
def test_exit_conditions_and_keys_are_checked_against_their_source_schema(
        shop: Path, block: str, line: int, problem: str) -> None:
    path = shop / "definitions" / "big_order.yaml"
    path.write_text(path.read_text().replace("steps:\n", block + "steps:\n"))
    messages = _messages(shop)
    assert len(messages) == 1 and messages[0].startswith(f"{path}:{line}: ") and problem in messages[0], messages


def test_a_wait_for_condition_is_checked_against_its_source_schema(shop: Path) -> None:
    path = shop / "definitions" / "big_order.yaml"
    path.write_text(path.read_text() + "  - id: until_cancelled\n    wait_for:\n      event: OrderCancelled\n"
                    "      timeout: 1d\n      when: payload.refund > 0\n")
    messages = _messages(shop)
    assert len(messages) == 1 and messages[0].startswith(f"{path}:18: ") and "no field 'refund'" in messages[0], messages


def test_contact_fields_live_on_the_customer_not_in_the_payload(shop: Path) -> None:
    path = _set_filter(shop, "payload.buyer.email != null")
    assert _messages(shop) == [f"{path}:5: expression 'payload.buyer.email != null': payload.buyer has no field 'email' (the source moves it to customer.email)"]


def test_a_key_on_a_field_the_source_maps_to_a_contact_point_is_rejected_with_file_and_line(shop: Path) -> None:
    path = shop / "definitions" / "big_order.yaml"
    path.write_text(path.read_text().replace("key: payload.order_id", "key: payload.buyer.email"))
    assert _messages(shop) == [f"{path}:8: key 'payload.buyer.email' is a contact point (the source maps it to "
                               "customer.email): it would put an address into workflow ids, logs and traces; key on "
                               "an id (e.g. payload.order_id)"]
