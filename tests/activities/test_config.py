"""Channel selection and provider settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.channels import OutgoingMessage
from activities.circuit import CircuitPolicy
from activities.config import build_channels, check_providers, circuit_policy_from, send_policy
from activities.email_sendgrid import SendGridChannel
from activities.email_smtp import SmtpChannel
from activities.errors import PERMANENT_ERROR_TYPES, ChannelUnavailableError
from activities.outbox import OutboxChannel, UnavailableChannel
from activities.sms_twilio import TwilioChannel
from core.errors import ConfigError
from core.settings import ChannelSettings
from eventflow.settings import check_unknown


def test_outbox_is_the_default_for_every_channel_in_dev_mode(tmp_path: Path) -> None:
    channels = build_channels({"EVENTFLOW_OUTBOX_PATH": str(tmp_path / "o.jsonl"), "EVENTFLOW_DEV_MODE": "true"})
    assert {name: type(c) for name, c in channels.items()} == {
        "email": OutboxChannel, "sms": OutboxChannel, "whatsapp": OutboxChannel, "push": OutboxChannel,
        "webpush": OutboxChannel}


async def test_outside_dev_mode_a_channel_without_provider_fails_its_sends_and_writes_nothing(tmp_path: Path) -> None:
    outbox = tmp_path / "o.jsonl"
    channels = build_channels({"EVENTFLOW_OUTBOX_PATH": str(outbox), "EVENTFLOW_EMAIL_PROVIDER": "sendgrid",
                               "SENDGRID_API_KEY": "SG.k", "EVENTFLOW_EMAIL_FROM": "shop@example.com"})
    assert {name: type(c) for name, c in channels.items()} == {
        "email": SendGridChannel, "sms": UnavailableChannel, "whatsapp": UnavailableChannel,
        "push": UnavailableChannel, "webpush": UnavailableChannel}
    sms = channels["sms"]
    assert isinstance(sms, UnavailableChannel)
    with pytest.raises(ChannelUnavailableError, match="EVENTFLOW_SMS_PROVIDER") as failed:
        await sms.deliver(OutgoingMessage(channel="sms", to="+4915112345678", subject=None, body="hi",
                                          idempotency_key="k"))
    assert failed.value.error_type == "ChannelUnavailable" and "ChannelUnavailable" in PERMANENT_ERROR_TYPES
    assert not outbox.exists()


def test_providers_are_chosen_per_channel_with_secrets_from_files(tmp_path: Path) -> None:
    key_file = tmp_path / "sendgrid-key"
    key_file.write_text("SG.from-file\n")
    environ = {
        "EVENTFLOW_OUTBOX_PATH": str(tmp_path / "o.jsonl"),
        "EVENTFLOW_EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY_FILE": str(key_file),
        "EVENTFLOW_EMAIL_FROM": "shop@example.com",
        "EVENTFLOW_WHATSAPP_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t",
    }
    check_unknown(environ)  # every variable used here is declared
    channels = build_channels(environ)
    assert isinstance(channels["email"], SendGridChannel)
    assert isinstance(channels["whatsapp"], TwilioChannel)
    assert isinstance(channels["sms"], UnavailableChannel)  # no provider, not dev mode: fails closed
    assert channels["email"]._config.api_key == "SG.from-file"


def test_missing_provider_settings_fail_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        build_channels({"EVENTFLOW_SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": "AC1",
                        "EVENTFLOW_OUTBOX_PATH": str(tmp_path / "o.jsonl")})
    assert missing.value.variable == "TWILIO_AUTH_TOKEN"
    with pytest.raises(ConfigError) as invalid:
        build_channels({"EVENTFLOW_EMAIL_PROVIDER": "mailchimp"})
    assert invalid.value.variable == "EVENTFLOW_EMAIL_PROVIDER"


def test_send_policy_reads_quiet_hours_and_cap() -> None:
    policy = send_policy({"EVENTFLOW_QUIET_HOURS": "21:00-08:00", "EVENTFLOW_DAILY_CAP": "3"})
    assert (policy.quiet_hours, policy.daily_cap) == ("21:00-08:00", 3)
    with pytest.raises(ConfigError):
        send_policy({"EVENTFLOW_QUIET_HOURS": "9pm-8am"})


def test_the_phone_default_region_is_a_region_libphonenumber_knows_or_none() -> None:
    assert send_policy({}).phone_default_region is None
    assert send_policy({"EVENTFLOW_PHONE_DEFAULT_REGION": " de "}).phone_default_region == "DE"
    with pytest.raises(ConfigError) as raised:
        send_policy({"EVENTFLOW_PHONE_DEFAULT_REGION": "Germany"})
    assert raised.value.variable == "EVENTFLOW_PHONE_DEFAULT_REGION"


def test_outbox_for_a_used_channel_fails_closed_outside_dev_mode() -> None:
    with pytest.raises(ConfigError) as unset:
        check_providers({"email", "sms"}, {"EVENTFLOW_EMAIL_PROVIDER": "sendgrid"})
    assert unset.value.variable == "EVENTFLOW_SMS_PROVIDER"
    assert "is unset (outbox)" in str(unset.value) and "EVENTFLOW_DEV_MODE=true" in str(unset.value)
    with pytest.raises(ConfigError) as explicit:
        check_providers({"email"}, {"EVENTFLOW_EMAIL_PROVIDER": "outbox", "EVENTFLOW_DEV_MODE": "false"})
    assert explicit.value.variable == "EVENTFLOW_EMAIL_PROVIDER" and "is outbox" in str(explicit.value)


def test_outbox_is_allowed_in_dev_mode_or_for_unused_channels() -> None:
    check_providers({"email", "sms", "whatsapp"}, {"EVENTFLOW_DEV_MODE": "true"})
    check_providers({"email"}, {"EVENTFLOW_EMAIL_PROVIDER": "sendgrid"})  # sms/whatsapp unused: outbox is fine
    check_providers(set(), {})
    with pytest.raises(ConfigError) as invalid:
        check_providers({"email"}, {"EVENTFLOW_DEV_MODE": "maybe"})
    assert invalid.value.variable == "EVENTFLOW_DEV_MODE"


def test_push_providers_read_their_key_files_and_name_the_variable_when_one_is_missing(tmp_path: Path) -> None:
    from activities.push_fcm import FcmChannel
    from activities.push_webpush import WebPushChannel
    from tests.activities.push_stubs import PushStub, vapid_key_pem

    account, vapid = tmp_path / "sa.json", tmp_path / "vapid.pem"
    account.write_text(__import__("json").dumps(PushStub(base_url="http://127.0.0.1:9").service_account()))
    vapid.write_bytes(vapid_key_pem()[0])
    environ = {"EVENTFLOW_PUSH_PROVIDER": "fcm", "EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE": str(account),
               "EVENTFLOW_WEBPUSH_PROVIDER": "webpush", "EVENTFLOW_VAPID_PRIVATE_KEY_FILE": str(vapid),
               "EVENTFLOW_VAPID_SUBJECT": "mailto:ops@example.com"}
    channels = build_channels(environ)
    assert type(channels["push"]) is FcmChannel and type(channels["webpush"]) is WebPushChannel
    with pytest.raises(ConfigError, match="EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE"):
        build_channels({**environ, "EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="EVENTFLOW_VAPID_SUBJECT"):
        build_channels({**environ, "EVENTFLOW_VAPID_SUBJECT": "ops@example.com"})


def test_email_providers_list_the_failover_order_and_are_checked_at_start(tmp_path: Path) -> None:
    environ = {"EVENTFLOW_OUTBOX_PATH": str(tmp_path / "o.jsonl"), "EVENTFLOW_EMAIL_PROVIDERS": "sendgrid, smtp",
               "SENDGRID_API_KEY": "SG.k", "EVENTFLOW_EMAIL_FROM": "shop@example.com",
               "EVENTFLOW_SMTP_HOST": "relay.example.com", "EVENTFLOW_PROVIDER_CIRCUIT_FAILURES": "3",
               "EVENTFLOW_PROVIDER_CIRCUIT_OPEN_SECONDS": "45"}
    check_unknown(environ)
    email = build_channels(environ)["email"]
    assert isinstance(email, tuple) and [type(p) for p in email] == [SendGridChannel, SmtpChannel]
    assert circuit_policy_from(ChannelSettings.load(environ)) == CircuitPolicy(failure_threshold=3, open_seconds=45.0)
    assert ChannelSettings.load(environ).provider("email") == "sendgrid"  # the primary sets the queue's rate
    for wrong, problem in (("sendgrid,sendgrid", "twice"), ("sendgrid,mailgun", "smtp"), ("outbox,smtp", "smtp")):
        with pytest.raises(ConfigError, match=problem) as failed:
            build_channels({**environ, "EVENTFLOW_EMAIL_PROVIDERS": wrong})
        assert failed.value.variable == "EVENTFLOW_EMAIL_PROVIDERS"
    with pytest.raises(ConfigError, match="set one of them") as conflicting:
        build_channels({**environ, "EVENTFLOW_EMAIL_PROVIDER": "smtp"})
    assert conflicting.value.variable == "EVENTFLOW_EMAIL_PROVIDERS"
    with pytest.raises(ConfigError) as missing:
        build_channels({**environ, "EVENTFLOW_SMTP_HOST": ""})
    assert missing.value.variable == "EVENTFLOW_SMTP_HOST"
