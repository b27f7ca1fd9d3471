"""The Twilio SMS and WhatsApp channels against a local server speaking the Messages API."""

from __future__ import annotations

import base64
import json

import pytest

from activities.channels import OutgoingMessage
from activities.errors import InvalidAddressError, RateLimitedError, RecipientUnsubscribedError, RetryableSendError
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig
from tests.activities.provider_stub import ProviderStub, invalid_number, rate_limited, server_error, unsubscribed

SID = "AC0123456789abcdef0123456789abcdef"


def _client(provider: ProviderStub) -> TwilioClient:
    return TwilioClient(TwilioConfig(account_sid=SID, auth_token="tw-secret", sms_from="+15550001111",
                                     whatsapp_from="+15550002222", base_url=provider.base_url, timeout_seconds=5))


SMS = OutgoingMessage(idempotency_key="journey:x:c1/nudge", channel="sms", to="+15557654321", body="Your cart misses you")


async def test_sms_carries_basic_auth_from_to_and_body(provider: ProviderStub) -> None:
    result = await TwilioChannel(_client(provider), "sms").deliver(SMS)

    assert result.status == "sent" and result.provider == "twilio"
    assert result.provider_message_id and result.provider_message_id.startswith("SM")
    [request] = provider.sends()
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{SID}:tw-secret".encode()).decode()
    assert request.body == {"To": "+15557654321", "From": "+15550001111", "Body": "Your cart misses you"}


async def test_whatsapp_uses_whatsapp_addresses_and_an_approved_content_template(provider: ProviderStub) -> None:
    message = OutgoingMessage(idempotency_key="k", channel="whatsapp", to="+15557654321", body="",
                              provider_template_id="HX0123456789abcdef",
                              template_variables={"1": "Ada", "2": "ord-42"})
    await TwilioChannel(_client(provider), "whatsapp").deliver(message)

    [request] = provider.sends()
    assert request.body["To"] == "whatsapp:+15557654321"
    assert request.body["From"] == "whatsapp:+15550002222"
    assert request.body["ContentSid"] == "HX0123456789abcdef"
    assert json.loads(request.body["ContentVariables"]) == {"1": "Ada", "2": "ord-42"}
    assert "Body" not in request.body


async def test_error_codes_map_to_failure_classes(provider: ProviderStub) -> None:
    channel = TwilioChannel(_client(provider), "sms")
    provider.reply(invalid_number(), unsubscribed(), rate_limited(5), server_error())

    with pytest.raises(InvalidAddressError) as invalid:
        await channel.deliver(SMS)
    assert invalid.value.provider_code == 21211
    with pytest.raises(RecipientUnsubscribedError):
        await channel.deliver(SMS)
    with pytest.raises(RateLimitedError) as limited:
        await channel.deliver(SMS)
    assert limited.value.retry_after_seconds == 5.0
    with pytest.raises(RetryableSendError) as unavailable:
        await channel.deliver(SMS)
    assert unavailable.value.status == 500
    assert len(provider.sends()) == 4


async def test_reconcile_finds_a_message_the_provider_already_accepted(provider: ProviderStub) -> None:
    channel = TwilioChannel(_client(provider), "sms")
    sent = await channel.deliver(SMS)
    other = OutgoingMessage(idempotency_key="k2", channel="sms", to="+15557654321", body="something else")

    found = await channel.reconcile(SMS, since_epoch_seconds=0)
    missing = await channel.reconcile(other, since_epoch_seconds=0)

    assert found is not None and found.status == "duplicate" and found.provider_message_id == sent.provider_message_id
    assert missing is None
    assert len(provider.sends()) == 1
