"""The validator's WhatsApp rule (journeys/_whatsapp_checks.py): free-form text only where something covers the
time outside the 24-hour window, named at the line of the option to change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from journeys.catalog import definition_from_snapshot, with_version
from journeys.loader import check_snapshot, validate_folder
from tests.workflows.journey_harness import DEFAULT_TEMPLATES, compile_journey

CHAT: dict[str, Any] = {"id": "chat", "default_locale": "en", "channels": {
    "email": {"en": {"subject": "Shipped", "body": "Order {{ payload.order_id }} ships."}},
    "sms": {"en": {"body": "Order {{ payload.order_id }} ships."}},
    # English free-form only; German with a template for outside the window.
    "whatsapp": {"en": {"body": "Order {{ payload.order_id }} ships."},
                 "de": {"body": "Bestellung {{ payload.order_id }} ist unterwegs.", "content_sid": "HXde"}}}}
TEMPLATED = {**CHAT, "id": "templated", "channels": {**CHAT["channels"], "whatsapp": {
    "en": {"body": "Order {{ payload.order_id }} ships.", "content_sid": "HXen"}}}}


def _journey(*sends: str) -> str:
    steps = "".join(f"  - id: s{index}\n    {send}\n" for index, send in enumerate(sends))
    return ("id: wa\nversion: 1\ntrigger:\n  event: PurchaseCompleted\nentry:\n  rule: one_active\nsteps:\n" + steps)


def _problems(tmp_path: Path, definition: str) -> list[tuple[int, str]]:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "wa.yaml").write_text(definition)
    for template in (CHAT, TEMPLATED):
        (tmp_path / "templates" / f"{template['id']}.yaml").write_text(yaml.safe_dump(template))
    report = validate_folder(tmp_path)
    assert (report.definitions == ()) == bool(report.problems)
    return [(p.line, p.message) for p in report.problems]


@pytest.mark.parametrize("send", [
    "send: {channel: whatsapp, template: chat, fallback: sms}",  # outside the window the SMS carries it
    "send: {channel: whatsapp, template: templated}",
    "send: {channel: email, template: chat, fallback: sms}",
    "send: {channel: sms, template: templated, fallback: whatsapp}",
])
def test_sends_that_never_need_free_form_text_outside_the_window_are_valid(tmp_path: Path, send: str) -> None:
    assert _problems(tmp_path, _journey(send)) == []


@pytest.mark.parametrize(("send", "option", "or_fallback"), [
    ("send: {channel: whatsapp, template: chat}", "template", True),
    ("send: {channel: whatsapp, template: chat, fallback: whatsapp}", "template", True),
    ("send: {channel: email, template: chat, fallback: whatsapp}", "fallback", False),
    ("digest: {event: OrderShipped, window: 1h, send: {channel: whatsapp, template: chat}}", "template", True),
])
def test_free_form_whatsapp_text_with_nothing_for_outside_the_window_is_an_error_at_its_option(
        tmp_path: Path, send: str, option: str, or_fallback: bool) -> None:
    definition = _journey("send: {channel: email, template: chat}", send)
    [(line, message)] = _problems(tmp_path, definition)

    assert definition.splitlines()[line - 1].strip() == send  # a flow mapping has every option on its line
    assert message.startswith("template 'chat' whatsapp/en has no content_sid: WhatsApp takes free-form text only "
                              "within 24 hours of the customer's last message")
    assert "(OutsideWhatsAppWindow)" in message
    assert message.endswith("or the send a fallback channel") is or_fallback


def test_the_error_names_the_option_line_in_a_block_mapping(tmp_path: Path) -> None:
    definition = _journey("send:\n      channel: email\n      template: chat\n      fallback: whatsapp")
    [(line, _)] = _problems(tmp_path, definition)
    assert definition.splitlines()[line - 1].strip() == "fallback: whatsapp"


def test_a_catalog_snapshot_published_before_the_rule_is_still_accepted(tmp_path: Path) -> None:
    free_form = json.loads(json.dumps(DEFAULT_TEMPLATES))
    free_form["note"]["channels"]["whatsapp"] = {"en": {"body": "WA"}}
    snapshot = compile_journey(tmp_path, _journey("send: {channel: whatsapp, template: note, fallback: sms}"),
                               free_form)
    older = json.loads(json.dumps(snapshot))
    del older["steps"][0]["send"]["fallback"]  # free-form WhatsApp with no fallback, as publishes allowed before
    older = with_version(older, older["version"])

    assert check_snapshot(older, definition_from_snapshot(older)) == []
