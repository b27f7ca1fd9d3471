"""The SendGrid channel against a local server speaking the v3 Mail Send API."""

from __future__ import annotations

import pytest

from activities.channels import OutgoingMessage
from activities.email_sendgrid import IDEMPOTENCY_HEADER, SendGridChannel, SendGridConfig
from activities.errors import InvalidAddressError, ProviderAuthError, RateLimitedError, RetryableSendError
from tests.activities.provider_stub import ProviderStub, Reply


def _channel(provider: ProviderStub) -> SendGridChannel:
    return SendGridChannel(SendGridConfig(api_key="SG.test-key", from_email="shop@example.com",
                                          from_name="Shop", base_url=provider.base_url, timeout_seconds=5))


MESSAGE = OutgoingMessage(idempotency_key="journey:x:c1/thank_you", channel="email", to="ada@example.com",
                          body="Thanks for order 42", subject="Order 42")


async def test_mail_send_carries_auth_sender_recipient_content_and_idempotency_key(provider: ProviderStub) -> None:
    result = await _channel(provider).deliver(MESSAGE)

    assert result.status == "sent" and result.provider == "sendgrid"
    assert result.provider_message_id and result.provider_message_id.startswith("sg-")
    [request] = provider.sends()
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert request.body["personalizations"] == [{"to": [{"email": "ada@example.com"}]}]
    assert request.body["subject"] == "Order 42"
    assert request.body["content"] == [{"type": "text/plain", "value": "Thanks for order 42"}]
    assert request.body["custom_args"] == {"idempotency_key": "journey:x:c1/thank_you", "channel": "email"}
    assert request.body["headers"] == {IDEMPOTENCY_HEADER: "journey:x:c1/thank_you"}


async def test_an_html_part_is_sent_as_the_html_alternative_after_the_text(provider: ProviderStub) -> None:
    message = OutgoingMessage(idempotency_key="k", channel="email", to="ada@example.com", subject="Order 42",
                              body="Thanks for order 42", html="<html><body><p>Thanks for order 42</p></body></html>")
    await _channel(provider).deliver(message)

    [request] = provider.sends()
    assert request.body["content"] == [
        {"type": "text/plain", "value": "Thanks for order 42"},
        {"type": "text/html", "value": "<html><body><p>Thanks for order 42</p></body></html>"}]


async def test_dynamic_template_sends_template_id_and_rendered_variables(provider: ProviderStub) -> None:
    message = OutgoingMessage(idempotency_key="k", channel="email", to="ada@example.com", body="",
                              provider_template_id="d-123", template_variables={"order": "42"})
    await _channel(provider).deliver(message)

    [request] = provider.sends()
    assert request.body["template_id"] == "d-123"
    assert request.body["personalizations"][0]["dynamic_template_data"] == {"order": "42"}
    assert "content" not in request.body


async def test_invalid_address_is_permanent(provider: ProviderStub) -> None:
    provider.reply(Reply(400, {"errors": [{"field": "personalizations.0.to.0.email",
                                           "message": "Does not contain a valid address."}]}))
    with pytest.raises(InvalidAddressError) as caught:
        await _channel(provider).deliver(MESSAGE)
    assert caught.value.status == 400


async def test_auth_failure_is_permanent(provider: ProviderStub) -> None:
    provider.reply(Reply(401, {"errors": [{"message": "The provided authorization grant is invalid"}]}))
    with pytest.raises(ProviderAuthError):
        await _channel(provider).deliver(MESSAGE)


async def test_rate_limit_carries_retry_after_and_5xx_is_retryable(provider: ProviderStub) -> None:
    provider.reply(Reply(429, {"errors": []}, {"Retry-After": "7"}), Reply(503, {"errors": []}))
    with pytest.raises(RateLimitedError) as limited:
        await _channel(provider).deliver(MESSAGE)
    assert limited.value.retry_after_seconds == 7.0
    with pytest.raises(RetryableSendError) as unavailable:
        await _channel(provider).deliver(MESSAGE)
    assert unavailable.value.status == 503 and not unavailable.value.delivery_uncertain


async def test_messages_after_the_first_reuse_its_connection(provider: ProviderStub) -> None:
    channel = _channel(provider)
    for _ in range(3):
        await channel.deliver(MESSAGE)
    peers = {request.peer for request in provider.sends()}
    assert len(provider.sends()) == 3 and len(peers) == 1 and None not in peers


async def test_a_message_no_connection_carried_is_retryable_and_certainly_not_sent() -> None:
    channel = SendGridChannel(SendGridConfig(api_key="k", from_email="a@example.com",
                                             base_url="http://127.0.0.1:9", timeout_seconds=2))
    with pytest.raises(RetryableSendError) as caught:
        await channel.deliver(MESSAGE)
    assert not caught.value.delivery_uncertain
