"""``eventflow broadcasts create --topic``: the topic is checked as a journey's send step's, and snapshotted."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventflow.cli import build_parser
from eventflow.commands.broadcasts import BroadcastRefusedError, _message
from store.broadcasts import BroadcastMessage

JOURNEYS = Path(__file__).resolve().parents[3] / "journeys"


def _message_of(*flags: str) -> BroadcastMessage:
    return _message(build_parser().parse_args(["broadcasts", "create", "b", "--segment", "s", "--template",
                                               "cart_reminder", "--dir", str(JOURNEYS), *flags]))


def test_the_topic_goes_into_the_message_snapshot() -> None:
    message = _message_of("--topic", "product_news")
    assert message.topic == "product_news"
    assert BroadcastMessage.from_json(message.as_json()) == message
    assert _message_of().topic == "", "without --topic: the channel-wide opt-out alone, as before"


def test_an_undeclared_topic_or_one_not_offered_on_the_channel_is_refused() -> None:
    with pytest.raises(BroadcastRefusedError, match=r"unknown topic 'newsletter' \(known: order_updates, "):
        _message_of("--topic", "newsletter")
    with pytest.raises(BroadcastRefusedError, match="topic 'product_news' is not sent on sms"):
        _message_of("--channel", "sms", "--topic", "product_news")


def test_a_message_snapshot_from_before_topics_reads_without_one() -> None:
    old = {"channel": "email", "template_id": "t", "default_locale": "en", "variants": {"en": {"body": "x"}},
           "priority": ""}
    assert BroadcastMessage.from_json(old).topic == ""
