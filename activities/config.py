"""Which channel implementation serves each channel name, and the send defaults, from typed settings.

The settings themselves (variables, types, defaults, secret files) are declared in
`core.settings` (`ChannelSettings`, `SendGridSettings`, `SmtpSettings`, `TwilioSettings`, `FcmSettings`,
`WebPushSettings`, `WorkerSettings`);
this module turns them into channels. Provider secrets come from the variable or from a mounted
file named by ``<VARIABLE>_FILE`` (Kubernetes secrets), the file winning when both are set.

The outbox channel (a local JSON Lines file) is the default so a checkout runs without accounts,
but it fails closed: outside development mode (``EVENTFLOW_DEV_MODE``) a worker whose journeys use
a channel served by the outbox refuses to start (`check_providers`), so a production install that
forgot its provider values cannot "send" into a file and count the messages as sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from pydantic import SecretStr

from activities.caps import CapSet, CapSpecError
from activities.channels import Channel, ChannelProviders, providers_of
from activities.circuit import CircuitPolicy
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.email_smtp import SmtpChannel, SmtpConfig, SmtpSecurity
from activities.outbox import OutboxChannel, UnavailableChannel
from activities.push_fcm import FcmChannel, FcmConfig, ServiceAccount, ServiceAccountError
from activities.push_webpush import WebPushChannel, WebPushConfig
from activities.ratelimit import TokenBucket
from activities.send import SendPolicy, UncertainDelivery
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig
from core.errors import ConfigError
from core.settings import (
    ChannelSettings,
    DevStackSettings,
    FcmSettings,
    SendGridSettings,
    SettingsGroup,
    SmtpSettings,
    TwilioSettings,
    WebPushSettings,
    WorkerSettings,
)
from core.vocabulary import CHANNELS

DEV_MODE = ChannelSettings.variable("dev_mode")


def outbox_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$EVENTFLOW_OUTBOX_PATH`` or ``<cache>/outbox.jsonl``."""
    configured = ChannelSettings.load(environ).outbox_path
    return configured if configured is not None else DevStackSettings.load(environ).cache_root() / "outbox.jsonl"


def _required(group: SettingsGroup, field: str, why: str) -> str:
    value = getattr(group, field)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        raise ConfigError(type(group).variable(field), f"is required {why}")
    return str(value)


def sendgrid_config(sendgrid: SendGridSettings, channels: ChannelSettings) -> SendGridConfig:
    """SendGrid settings; raises `ConfigError` naming the first missing variable."""
    why = "when an email provider is sendgrid"
    return SendGridConfig(
        api_key=_required(sendgrid, "api_key", why),
        from_email=_required(sendgrid, "email_from", why),
        from_name=sendgrid.email_from_name,
        base_url=sendgrid.base_url,
        timeout_seconds=channels.provider_timeout_seconds,
    )


def smtp_config(smtp: SmtpSettings, sendgrid: SendGridSettings, channels: ChannelSettings) -> SmtpConfig:
    """SMTP settings (the sender shared with SendGrid's); raises `ConfigError` naming the first missing variable."""
    why = "when an email provider is smtp"
    password = smtp.password.get_secret_value() if smtp.password is not None else ""
    if smtp.username and not password:
        raise ConfigError(SmtpSettings.variable("password"), f"is required with {SmtpSettings.variable('username')}")
    return SmtpConfig(
        host=_required(smtp, "host", why),
        from_email=_required(sendgrid, "email_from", why),
        from_name=sendgrid.email_from_name,
        port=smtp.port,
        security=SmtpSecurity(smtp.security),
        username=smtp.username,
        password=password,
        ca_file=smtp.ca_file,
        timeout_seconds=channels.provider_timeout_seconds,
    )


def twilio_config(twilio: TwilioSettings, channels: ChannelSettings, *,
                  status_callback_base_url: str = "") -> TwilioConfig:
    """Twilio settings; raises `ConfigError` naming the first missing variable."""
    why = "when an SMS or WhatsApp provider is twilio"
    return TwilioConfig(
        account_sid=_required(twilio, "account_sid", why),
        auth_token=_required(twilio, "auth_token", why),
        sms_from=twilio.sms_from,
        whatsapp_from=twilio.whatsapp_from,
        messaging_service_sid=twilio.messaging_service_sid,
        base_url=twilio.base_url,
        region=twilio.region,
        edge=twilio.edge,
        timeout_seconds=channels.provider_timeout_seconds,
        status_callback_base_url=status_callback_base_url,
    )


def fcm_config(fcm: FcmSettings, channels: ChannelSettings) -> FcmConfig:
    """FCM settings and the service account they name; raises `ConfigError` naming the variable."""
    variable = FcmSettings.variable("service_account_file")
    if fcm.service_account_file is None:
        raise ConfigError(variable, "is required when EVENTFLOW_PUSH_PROVIDER=fcm")
    try:
        account = ServiceAccount.from_file(fcm.service_account_file)
    except ServiceAccountError as exc:
        raise ConfigError(variable, str(exc)) from None
    return FcmConfig(account=account, project_id=fcm.project_id, base_url=fcm.base_url,
                     timeout_seconds=channels.provider_timeout_seconds)


def webpush_config(webpush: WebPushSettings, channels: ChannelSettings) -> WebPushConfig:
    """Web Push settings and the VAPID key they name; raises `ConfigError` naming the variable."""
    why = "when EVENTFLOW_WEBPUSH_PROVIDER=webpush"
    key_variable = WebPushSettings.variable("vapid_private_key_file")
    if webpush.vapid_private_key_file is None:
        raise ConfigError(key_variable, f"is required {why}")
    subject = _required(webpush, "vapid_subject", why)
    if not subject.startswith(("mailto:", "https:")):
        raise ConfigError(WebPushSettings.variable("vapid_subject"), "must be a mailto: or https: URI (RFC 8292)")
    try:
        pem = webpush.vapid_private_key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(key_variable, f"cannot be read ({type(exc).__name__})") from None
    return WebPushConfig(vapid_private_key_pem=pem, vapid_subject=subject, ttl_seconds=webpush.ttl_seconds,
                         timeout_seconds=channels.provider_timeout_seconds)


def send_policy(environ: Mapping[str, str] | None = None) -> SendPolicy:
    """Worker-wide quiet hours and daily cap."""
    return policy_from(WorkerSettings.load(environ))


def policy_from(worker: WorkerSettings) -> SendPolicy:
    """The send defaults and the lease of validated worker settings."""
    try:
        caps = CapSet.parse(worker.caps)
    except CapSpecError as exc:
        raise ConfigError(WorkerSettings.variable("caps"), str(exc)) from exc
    return SendPolicy(quiet_hours=worker.quiet_hours, daily_cap=worker.daily_cap,
                      lease_seconds=worker.send_lease_seconds,
                      uncertain_delivery=UncertainDelivery(worker.uncertain_delivery),
                      caps=caps, cap_reserve=worker.caps_priority_reserve,
                      providers_reporting=frozenset(worker.providers_reporting),
                      report_window_seconds=worker.send_report_window_seconds,
                      phone_default_region=worker.phone_default_region)


def check_lease_covers_calls(channels: Mapping[str, ChannelProviders], policy: SendPolicy) -> None:
    """Refuses a send lease that some provider's whole call cannot end inside (with the lease's slack).

    An attempt calls a provider only when the call's own bound ends inside its lease (ADR-9), so
    with a shorter lease that provider's sends would fail ``SendLeaseTooShort`` forever.
    """
    for channel, serving in sorted(channels.items()):
        for provider in providers_of(serving):
            needed = provider.call_timeout_seconds + policy.lease_margin_seconds
            if needed > policy.lease_seconds:
                raise ConfigError(
                    WorkerSettings.variable("send_lease_seconds"),
                    f"is {policy.lease_seconds:g} s, but one {provider.name} call may take "
                    f"{provider.call_timeout_seconds:g} s ({ChannelSettings.variable('provider_timeout_seconds')} "
                    f"and the provider's steps) and {policy.lease_margin_seconds:g} s stay spare: its {channel} sends "
                    f"would never be made; set it to {needed:g} or more, or lower the provider timeout")


def channel_rates_from(channels: ChannelSettings, sendgrid: SendGridSettings,
                       twilio: TwilioSettings, smtp: SmtpSettings | None = None, fcm: FcmSettings | None = None,
                       webpush: WebPushSettings | None = None) -> dict[str, float]:
    """Each channel's provider rate limit, which Temporal holds on the channel's send queue across replicas.

    With failover providers it is the first's: a later provider's token bucket holds its own limit
    within the attempt that fails over to it.
    """
    rates: dict[str, float] = {}
    for channel in CHANNELS:
        match channels.provider(channel):
            case "sendgrid":
                rates[channel] = sendgrid.rate_per_second
            case "smtp":
                rates[channel] = (smtp or SmtpSettings()).rate_per_second
            case "twilio":
                rates[channel] = twilio.rate_per_second
            case "fcm":
                rates[channel] = (fcm or FcmSettings()).rate_per_second
            case "webpush":
                rates[channel] = (webpush or WebPushSettings()).rate_per_second
    return rates


def circuit_policy_from(channels: ChannelSettings) -> CircuitPolicy:
    """The failover providers' circuit breakers, from validated settings."""
    return CircuitPolicy(failure_threshold=channels.provider_circuit_failures,
                         open_seconds=channels.provider_circuit_open_seconds)


def build_channels(environ: Mapping[str, str] | None = None) -> dict[str, ChannelProviders]:
    """The provider(s) of every channel (`core.vocabulary.CHANNELS`), as the providers settings say."""
    return channels_from(ChannelSettings.load(environ), SendGridSettings.load(environ),
                         TwilioSettings.load(environ), outbox=outbox_path(environ), smtp=SmtpSettings.load(environ),
                         fcm=FcmSettings.load(environ), webpush=WebPushSettings.load(environ))


def channels_from(channels: ChannelSettings, sendgrid: SendGridSettings, twilio: TwilioSettings, *,
                  outbox: Path, status_callback_base_url: str = "", smtp: SmtpSettings | None = None,
                  fcm: FcmSettings | None = None, webpush: WebPushSettings | None = None
                  ) -> dict[str, ChannelProviders]:
    """The channels of validated settings; ``outbox`` is the outbox channel's file; Twilio asks for
    status callbacks at ``status_callback_base_url`` (`eventflow webhooks`) when it is set.

    A channel without a provider is the outbox only in development mode; otherwise it is an
    `UnavailableChannel`, whose sends fail as ``ChannelUnavailable`` (fail closed at run time too:
    a journey published live on it after start-up sends nothing in clear to a file). A channel with
    several providers (``EVENTFLOW_EMAIL_PROVIDERS``) is their tuple, in failover order.
    """
    outbox_channel: Channel = OutboxChannel(outbox)
    built: dict[str, ChannelProviders] = {}
    email: list[Channel] = []
    for name in channels.providers("email"):
        match name:
            case "sendgrid":
                email.append(SendGridChannel(sendgrid_config(sendgrid, channels),
                                             TokenBucket(sendgrid.rate_per_second, sendgrid.burst)))
            case "smtp":
                smtp = smtp or SmtpSettings()
                email.append(SmtpChannel(smtp_config(smtp, sendgrid, channels),
                                         TokenBucket(smtp.rate_per_second, smtp.burst)))
    match email:
        case []:
            built["email"] = _unserved("email", channels, outbox_channel)
        case [only]:
            built["email"] = only
        case _:
            built["email"] = tuple(email)
    twilio_kinds = [kind for kind in ("sms", "whatsapp") if channels.provider(kind) == "twilio"]
    if twilio_kinds:
        client = TwilioClient(twilio_config(twilio, channels, status_callback_base_url=status_callback_base_url))
        # One bucket per account: SMS and WhatsApp share Twilio's account-level limits.
        bucket = TokenBucket(twilio.rate_per_second, twilio.burst)
        for kind in twilio_kinds:
            built[kind] = TwilioChannel(client, kind, bucket)
    for kind in ("sms", "whatsapp"):
        if kind not in built:
            built[kind] = _unserved(kind, channels, outbox_channel)
    if channels.push_provider == "fcm":
        fcm = fcm or FcmSettings()
        built["push"] = FcmChannel(fcm_config(fcm, channels), TokenBucket(fcm.rate_per_second, fcm.burst))
    else:
        built["push"] = _unserved("push", channels, outbox_channel)
    if channels.webpush_provider == "webpush":
        webpush = webpush or WebPushSettings()
        built["webpush"] = WebPushChannel(webpush_config(webpush, channels),
                                          TokenBucket(webpush.rate_per_second, webpush.burst))
    else:
        built["webpush"] = _unserved("webpush", channels, outbox_channel)
    return built


def _unserved(kind: str, channels: ChannelSettings, outbox_channel: Channel) -> Channel:
    if channels.dev_mode:
        return outbox_channel
    return UnavailableChannel(kind, ChannelSettings.variable(f"{kind}_provider"))


def dev_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``EVENTFLOW_DEV_MODE`` is on."""
    return ChannelSettings.load(environ).dev_mode


def check_providers(channels_used: Collection[str], environ: Mapping[str, str] | None = None) -> None:
    """Fails closed: outside development mode, no channel that journeys use may be the outbox.

    Args:
        channels_used: the channels the loaded journeys send on (including fallbacks).
        environ: the environment; the process's by default.

    Raises:
        ConfigError: naming the provider variable of the first such channel.
    """
    check_channels(channels_used, ChannelSettings.load(environ))


def check_channels(channels_used: Collection[str], channels: ChannelSettings) -> None:
    """`check_providers` on validated settings."""
    if channels.dev_mode:
        return
    for channel in sorted(set(channels_used) & set(CHANNELS)):
        if channels.provider(channel) == "outbox":
            field = f"{channel}_provider"
            variable = ChannelSettings.variable(field)
            shown = "is outbox" if field in channels.model_fields_set else "is unset (outbox)"
            raise ConfigError(variable, f"{shown}, which only writes messages to a local file, and journeys send "
                                        f"{channel}: choose a provider, or set {DEV_MODE}=true for local development")
