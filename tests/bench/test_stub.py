"""The benchmark's SendGrid stub answers the real SendGrid channel and counts duplicates by key and order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from activities.channels import OutgoingMessage
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from bench.stub import SendGridStub


@pytest.fixture
def stub() -> Iterator[SendGridStub]:
    server = SendGridStub()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _message(key: str, order_id: str) -> OutgoingMessage:
    return OutgoingMessage(idempotency_key=key, channel="email", to="ana@example.com", body="hi",
                           subject=f"bench order {order_id}")


async def test_sends_are_counted_per_order_and_repeats_are_duplicates(stub: SendGridStub) -> None:
    channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                             base_url=stub.base_url))
    result = await channel.deliver(_message("k1", "cap-1"))
    assert result.provider_message_id is not None and result.provider_message_id.startswith("bench-")
    await channel.deliver(_message("k2", "cap-2"))
    await channel.deliver(_message("k1", "cap-1"))  # a second attempt of the same send
    await channel.deliver(_message("k3", "cap-2"))  # the same order sent again under another key
    await channel.deliver(_message("k4", "hot-1"))

    assert [r.idempotency_key for r in stub.requests("cap-")] == ["k1", "k2", "k1", "k3"]
    first = stub.first_sends("cap-")
    assert {order: r.idempotency_key for order, r in first.items()} == {"cap-1": "k1", "cap-2": "k2"}
    assert stub.duplicates("cap-") == 2
    assert stub.duplicates("hot-") == 0
    assert list(stub.first_sends("hot-")) == ["hot-1"]
