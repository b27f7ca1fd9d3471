"""The push channels against local servers speaking Web Push and FCM HTTP v1 (tests/activities/push_stubs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.channels import OutgoingMessage
from activities.errors import DeviceGoneError, ProviderAuthError, RetryableSendError
from activities.outcomes import SendStatus
from activities.push_fcm import FcmChannel, FcmConfig, ServiceAccount
from activities.push_webpush import WebPushChannel, WebPushConfig
from tests.activities.push_stubs import PushStub, push_stub, vapid_key_pem

__all__ = ["push_stub"]


def _message(to: str, key: str = "journey:w/step") -> OutgoingMessage:
    return OutgoingMessage(idempotency_key=key, channel="webpush", to=to, body="Your cart is waiting",
                           subject="Still thinking?", link="https://shop.example.com/cart",
                           data={"cart_id": "c-17"})


def _webpush(stub: PushStub) -> WebPushChannel:
    pem, public = vapid_key_pem()
    stub.vapid_public_key = public
    return WebPushChannel(WebPushConfig(vapid_private_key_pem=pem, vapid_subject="mailto:ops@example.com"))


async def test_web_push_arrives_encrypted_and_vapid_signed(push_stub: PushStub) -> None:
    channel, browser = _webpush(push_stub), push_stub.browser()
    result = await channel.deliver(_message(browser.subscription()))
    assert result.status is SendStatus.SENT and result.provider == "webpush"
    [received] = push_stub.webpush[browser.sub_id]
    assert received["title"] == "Still thinking?" and received["body"] == "Your cart is waiting"
    assert received["link"] == "https://shop.example.com/cart" and received["data"] == {"cart_id": "c-17"}
    assert push_stub.refusals == []


async def test_web_push_signed_with_another_key_is_refused(push_stub: PushStub) -> None:
    channel, browser = _webpush(push_stub), push_stub.browser()
    push_stub.vapid_public_key = vapid_key_pem()[1]
    with pytest.raises(ProviderAuthError):
        await channel.deliver(_message(browser.subscription()))
    assert push_stub.refusals == ["unknown application server key"] and push_stub.webpush == {}


async def test_a_gone_subscription_is_reported_as_such(push_stub: PushStub) -> None:
    channel, browser = _webpush(push_stub), push_stub.browser()
    push_stub.gone.add(browser.sub_id)
    with pytest.raises(DeviceGoneError) as caught:
        await channel.deliver(_message(browser.subscription()))
    assert caught.value.status == 410 and caught.value.error_type == "DeviceUnregistered"


def _fcm(stub: PushStub, tmp_path: Path) -> FcmChannel:
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(stub.service_account()))
    return FcmChannel(FcmConfig(account=ServiceAccount.from_file(key_file), base_url=stub.base_url))


async def test_fcm_sends_with_a_bearer_minted_from_the_service_account(push_stub: PushStub, tmp_path: Path) -> None:
    channel = _fcm(push_stub, tmp_path)
    first = await channel.deliver(_message("token-a"))
    await channel.deliver(_message("token-b"))
    assert first.status is SendStatus.SENT and (first.provider_message_id or "").startswith("projects/example-project/")
    assert len(push_stub.tokens_issued) == 1, "the access token is cached between sends"
    [message] = push_stub.fcm["token-a"]
    assert message["notification"] == {"title": "Still thinking?", "body": "Your cart is waiting"}
    assert message["data"] == {"cart_id": "c-17", "link": "https://shop.example.com/cart"}
    assert push_stub.refusals == []


async def test_a_refused_bearer_fails_retryably_and_the_next_call_mints_a_new_one(push_stub: PushStub,
                                                                                    tmp_path: Path) -> None:
    channel = _fcm(push_stub, tmp_path)
    await channel.deliver(_message("token-a"))
    push_stub.revoked.add(push_stub.tokens_issued[0])
    with pytest.raises(RetryableSendError) as refused:
        await channel.deliver(_message("token-a", key="journey:w/other"))
    assert refused.value.status == 401 and not refused.value.delivery_uncertain
    await channel.deliver(_message("token-a", key="journey:w/other"))
    assert len(push_stub.tokens_issued) == 2 and len(push_stub.fcm["token-a"]) == 2


async def test_fcm_unregistered_token_is_gone(push_stub: PushStub, tmp_path: Path) -> None:
    channel = _fcm(push_stub, tmp_path)
    push_stub.gone.add("token-old")
    with pytest.raises(DeviceGoneError) as caught:
        await channel.deliver(_message("token-old"))
    assert caught.value.provider_code == "UNREGISTERED"
