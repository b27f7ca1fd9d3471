"""Which channel implementation serves each channel name, and the send defaults, from the environment.

Provider secrets come from the variable or from a mounted file named by ``<VARIABLE>_FILE``
(Kubernetes secrets), the file winning when both are set.

The outbox channel (a local JSON Lines file) is the default so a checkout runs without accounts,
but it fails closed: outside development mode (``EVENTFLOW_DEV_MODE``) a worker whose journeys use
a channel served by the outbox refuses to start (`check_providers`), so a production install that
forgot its provider values cannot "send" into a file and count the messages as sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from activities.channels import Channel
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.outbox import OutboxChannel
from activities.ratelimit import TokenBucket
from activities.send import SendPolicy
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig
from devstack.cache import cache_dir
from eventflow import settings as config
from eventflow.errors import ConfigError
from eventflow.settings import Setting, non_negative_int, positive_float, positive_int

CHANNELS = ("email", "sms", "whatsapp")
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


def _provider(*choices: str) -> object:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _quiet_hours(raw: str) -> str:
    if not _QUIET_HOURS.match(raw):
        raise ValueError("must look like 21:00-08:00")
    return raw


def flag(raw: str) -> bool:
    """Parser for a yes/no setting: true/false, yes/no, on/off or 1/0."""
    match raw.strip().lower():
        case "true" | "yes" | "on" | "1":
            return True
        case "false" | "no" | "off" | "0":
            return False
        case _:
            raise ValueError("must be true or false")


def _str(env: str, default: str | None, doc: str) -> Setting[object]:
    return Setting(env, str, default, doc)


DEV_MODE = "EVENTFLOW_DEV_MODE"

_DECLARED: list[Setting[object]] = [
    Setting(DEV_MODE, flag, False,
            "Development mode: lets the outbox channel (a local file) serve channels that journeys use. "
            "Set by `eventflow dev run` and the tests; never in production.", "bool"),
    Setting("EVENTFLOW_EMAIL_PROVIDER", _provider("outbox", "sendgrid"), "outbox",  # type: ignore[arg-type]
            "Email channel implementation: outbox or sendgrid.", "choice"),
    Setting("EVENTFLOW_SMS_PROVIDER", _provider("outbox", "twilio"), "outbox",  # type: ignore[arg-type]
            "SMS channel implementation: outbox or twilio.", "choice"),
    Setting("EVENTFLOW_WHATSAPP_PROVIDER", _provider("outbox", "twilio"), "outbox",  # type: ignore[arg-type]
            "WhatsApp channel implementation: outbox or twilio.", "choice"),
    _str("SENDGRID_API_KEY", None, "SendGrid API key (or SENDGRID_API_KEY_FILE)."),
    _str("SENDGRID_API_KEY_FILE", None, "File holding the SendGrid API key (a mounted secret)."),
    _str("EVENTFLOW_SENDGRID_BASE_URL", "https://api.sendgrid.com",
         "SendGrid API host (https://api.eu.sendgrid.com for EU subusers)."),
    _str("EVENTFLOW_EMAIL_FROM", None, "Verified sender address for email (required with sendgrid)."),
    _str("EVENTFLOW_EMAIL_FROM_NAME", "", "Sender display name for email."),
    _str("TWILIO_ACCOUNT_SID", None, "Twilio account SID."),
    _str("TWILIO_AUTH_TOKEN", None, "Twilio auth token (or TWILIO_AUTH_TOKEN_FILE)."),
    _str("TWILIO_AUTH_TOKEN_FILE", None, "File holding the Twilio auth token (a mounted secret)."),
    _str("EVENTFLOW_TWILIO_BASE_URL", "", "Twilio API base URL override (default https://api.twilio.com)."),
    _str("EVENTFLOW_TWILIO_REGION", "", "Twilio region (e.g. ie1) for regional processing."),
    _str("EVENTFLOW_TWILIO_EDGE", "", "Twilio edge location (e.g. dublin)."),
    _str("EVENTFLOW_SMS_FROM", "", "Sender number for SMS."),
    _str("EVENTFLOW_WHATSAPP_FROM", "", "Sender number for WhatsApp (whatsapp: prefix optional)."),
    _str("EVENTFLOW_TWILIO_MESSAGING_SERVICE_SID", "", "Send through this Messaging Service instead of a number."),
    Setting("EVENTFLOW_PROVIDER_TIMEOUT_SECONDS", positive_float, 10.0,
            "Per-request timeout of provider calls.", "float"),
    Setting("EVENTFLOW_SENDGRID_RATE_PER_SECOND", positive_float, 100.0,
            "SendGrid calls per second per worker (token bucket).", "float"),
    Setting("EVENTFLOW_SENDGRID_BURST", positive_int, 100,
            "SendGrid token bucket size.", "int"),
    Setting("EVENTFLOW_TWILIO_RATE_PER_SECOND", positive_float, 10.0,
            "Twilio calls per second per worker (token bucket).", "float"),
    Setting("EVENTFLOW_TWILIO_BURST", positive_int, 10,
            "Twilio token bucket size.", "int"),
    Setting("EVENTFLOW_QUIET_HOURS", _quiet_hours, "",
            "Default quiet hours in the customer's timezone, e.g. 21:00-08:00; empty for none.", "str"),
    Setting("EVENTFLOW_DAILY_CAP", non_negative_int, 0,
            "Default sends per channel per customer per local day; 0 for no cap.", "int"),
]
for _setting in _DECLARED:
    config.register(_setting)


def outbox_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$EVENTFLOW_OUTBOX_PATH`` or ``<cache>/outbox.jsonl``."""
    raw = config.read("EVENTFLOW_OUTBOX_PATH", environ)
    return Path(str(raw)) if raw else cache_dir() / "outbox.jsonl"


def _secret(env: Mapping[str, str], name: str) -> str | None:
    path = config.read(f"{name}_FILE", env)
    if path:
        try:
            return Path(str(path)).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", f"cannot read {path}: {exc.strerror}") from exc
    value = config.read(name, env)
    return str(value) if value else None


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = _secret(env, name) if name in ("SENDGRID_API_KEY", "TWILIO_AUTH_TOKEN") else config.read(name, env)
    if not value:
        raise ConfigError(name, f"is required {why}")
    return str(value)


def sendgrid_config(env: Mapping[str, str]) -> SendGridConfig:
    """SendGrid settings; raises `ConfigError` naming the first missing variable."""
    return SendGridConfig(
        api_key=_required(env, "SENDGRID_API_KEY", "when EVENTFLOW_EMAIL_PROVIDER=sendgrid"),
        from_email=_required(env, "EVENTFLOW_EMAIL_FROM", "when EVENTFLOW_EMAIL_PROVIDER=sendgrid"),
        from_name=str(config.read("EVENTFLOW_EMAIL_FROM_NAME", env) or ""),
        base_url=str(config.read("EVENTFLOW_SENDGRID_BASE_URL", env)),
        timeout_seconds=float(config.read("EVENTFLOW_PROVIDER_TIMEOUT_SECONDS", env)),  # type: ignore[arg-type]
    )


def twilio_config(env: Mapping[str, str]) -> TwilioConfig:
    """Twilio settings; raises `ConfigError` naming the first missing variable."""
    why = "when an SMS or WhatsApp provider is twilio"
    return TwilioConfig(
        account_sid=_required(env, "TWILIO_ACCOUNT_SID", why),
        auth_token=_required(env, "TWILIO_AUTH_TOKEN", why),
        sms_from=str(config.read("EVENTFLOW_SMS_FROM", env) or ""),
        whatsapp_from=str(config.read("EVENTFLOW_WHATSAPP_FROM", env) or ""),
        messaging_service_sid=str(config.read("EVENTFLOW_TWILIO_MESSAGING_SERVICE_SID", env) or ""),
        base_url=str(config.read("EVENTFLOW_TWILIO_BASE_URL", env) or ""),
        region=str(config.read("EVENTFLOW_TWILIO_REGION", env) or ""),
        edge=str(config.read("EVENTFLOW_TWILIO_EDGE", env) or ""),
        timeout_seconds=float(config.read("EVENTFLOW_PROVIDER_TIMEOUT_SECONDS", env)),  # type: ignore[arg-type]
    )


def send_policy(environ: Mapping[str, str] | None = None) -> SendPolicy:
    """Worker-wide quiet hours and daily cap."""
    env = os.environ if environ is None else environ
    return SendPolicy(
        quiet_hours=str(config.read("EVENTFLOW_QUIET_HOURS", env) or ""),
        daily_cap=int(config.read("EVENTFLOW_DAILY_CAP", env) or 0),  # type: ignore[call-overload]
    )


def build_channels(environ: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """The channel for each of ``email``, ``sms`` and ``whatsapp``, as the providers settings say."""
    env = os.environ if environ is None else environ
    outbox = OutboxChannel(outbox_path(env))
    channels: dict[str, Channel] = {}
    if config.read("EVENTFLOW_EMAIL_PROVIDER", env) == "sendgrid":
        channels["email"] = SendGridChannel(sendgrid_config(env), TokenBucket(
            float(config.read("EVENTFLOW_SENDGRID_RATE_PER_SECOND", env)),  # type: ignore[arg-type]
            int(config.read("EVENTFLOW_SENDGRID_BURST", env))))  # type: ignore[call-overload]
    else:
        channels["email"] = outbox
    twilio_kinds = [kind for kind in ("sms", "whatsapp")
                    if config.read(f"EVENTFLOW_{kind.upper()}_PROVIDER", env) == "twilio"]
    if twilio_kinds:
        client = TwilioClient(twilio_config(env))
        # One bucket per account: SMS and WhatsApp share Twilio's account-level limits.
        bucket = TokenBucket(float(config.read("EVENTFLOW_TWILIO_RATE_PER_SECOND", env)),  # type: ignore[arg-type]
                             int(config.read("EVENTFLOW_TWILIO_BURST", env)))  # type: ignore[call-overload]
        for kind in twilio_kinds:
            channels[kind] = TwilioChannel(client, kind, bucket)
    for kind in ("sms", "whatsapp"):
        channels.setdefault(kind, outbox)
    return channels


def dev_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``EVENTFLOW_DEV_MODE`` is on."""
    return bool(config.read(DEV_MODE, os.environ if environ is None else environ))


def check_providers(channels_used: Collection[str], environ: Mapping[str, str] | None = None) -> None:
    """Fails closed: outside development mode, no channel that journeys use may be the outbox.

    Args:
        channels_used: the channels the loaded journeys send on (including fallbacks).
        environ: the environment; ``os.environ`` by default.

    Raises:
        ConfigError: naming the provider variable of the first such channel.
    """
    env = os.environ if environ is None else environ
    if dev_mode(env):
        return
    for channel in sorted(set(channels_used) & set(CHANNELS)):
        variable = f"EVENTFLOW_{channel.upper()}_PROVIDER"
        if config.read(variable, env) == "outbox":
            shown = "is outbox" if env.get(variable) else "is unset (outbox)"
            raise ConfigError(variable, f"{shown}, which only writes messages to a local file, and journeys send "
                                        f"{channel}: choose a provider, or set {DEV_MODE}=true for local development")
