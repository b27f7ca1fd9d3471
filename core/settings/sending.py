"""The worker's sending: capacity and send defaults, channels and their providers, webhook steps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, SecretStr, model_validator
from pydantic_settings import NoDecode

from core.errors import ConfigError
from core.settings._base import (
    CapsSpec,
    Csv,
    EmailProvider,
    MessagingProvider,
    NonNegativeInt,
    PhoneRegion,
    Port,
    PositiveFloat,
    PositiveInt,
    PushProvider,
    QuietHours,
    SecretHosts,
    SettingsGroup,
    SmtpSecurityMode,
    UncertainDeliveryPolicy,
    WebPushProvider,
    _csv,
    _secret_from_file,
    env,
)
from core.vocabulary import CHANNELS


def _distinct(providers: tuple[str, ...]) -> tuple[str, ...]:
    if repeated := sorted({name for name in providers if providers.count(name) > 1}):
        raise ValueError(f"lists {repeated[0]} twice; each provider once, in failover order")
    return providers


#: Providers a channel may fail over between, in order (the outbox is a development stand-in, not one of them).
EmailProviderList = Annotated[tuple[Literal["sendgrid", "smtp"], ...], NoDecode, BeforeValidator(_csv),
                              AfterValidator(_distinct)]

# -- worker -----------------------------------------------------------------------------------------

class WorkerSettings(SettingsGroup):
    """One worker replica's capacity, its SDK metrics, and the send defaults."""

    concern: ClassVar[str] = "worker"

    max_concurrent_activities: PositiveInt = env("EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES", 100,
                                                 "Send activities one worker replica runs at once.")
    max_concurrent_workflow_tasks: PositiveInt = env("EVENTFLOW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", 100,
                                                     "Workflow tasks one worker replica runs at once.")
    broadcast_send_concurrency: PositiveInt = env(
        "EVENTFLOW_BROADCAST_SEND_CONCURRENCY", 32, "Sends one broadcast batch makes at once; each holds a database "
        "connection only while it reserves or records (keep EVENTFLOW_DATABASE_POOL_MAX_SIZE in proportion).")
    workflow_task_pollers: PositiveInt = env(
        "EVENTFLOW_WORKER_WORKFLOW_TASK_POLLERS", 10, "Long polls one worker replica keeps open for workflow tasks; "
        "a fifth of them take new journeys, the rest the replica's own sticky queue (docs/architecture.md).")
    activity_task_pollers: PositiveInt = env("EVENTFLOW_WORKER_ACTIVITY_TASK_POLLERS", 10,
                                             "Long polls one worker replica keeps open on each activity task queue.")
    workflow_sandbox: bool = env(
        "EVENTFLOW_WORKER_WORKFLOW_SANDBOX", False, "Run workflow code in the Temporal SDK's sandbox, which checks "
        "determinism at run time for about a tenth more worker CPU; the test suite and the replay tests always "
        "run it sandboxed (docs/architecture.md).")
    temporal_metrics_port: Port = env("EVENTFLOW_TEMPORAL_METRICS_PORT", 9465, "Loopback port of the Temporal SDK's "
                                      "Prometheus exporter, merged into /metrics (0 disables).")
    quiet_hours: QuietHours = env("EVENTFLOW_QUIET_HOURS", "", "Default quiet hours in the customer's timezone, "
                                  "e.g. 21:00-08:00; empty for none.")
    daily_cap: NonNegativeInt = env("EVENTFLOW_DAILY_CAP", 0,
                                    "Default sends per channel per customer per local day; 0 for no cap.")
    send_lease_seconds: PositiveFloat = env("EVENTFLOW_SEND_LEASE_SECONDS", 30.0,
                                            "How long one send attempt may call the provider before another "
                                            "attempt may (ADR-9); every provider's whole call (twice "
                                            "EVENTFLOW_PROVIDER_TIMEOUT_SECONDS for SMTP, FCM and Web Push) must "
                                            "end 2 s inside it, else the worker refuses to start.")
    uncertain_delivery: UncertainDeliveryPolicy = env(
        "EVENTFLOW_UNCERTAIN_DELIVERY", "at_most_once",
        "After a crash between a provider's accept and its record, on channels that cannot be asked (SendGrid): "
        "at_most_once (record `uncertain`, do not resend) or at_least_once (resend).")
    caps: CapsSpec = env("EVENTFLOW_CAPS", "", "Default rolling frequency caps per customer, per channel or `all` "
                         "channels, over the last 1 (day), 7 (week) or 30 (month) local days, e.g. "
                         "email:day=2,week=5;all:month=20; empty for none (journeys/README.md).")
    caps_priority_reserve: NonNegativeInt = env("EVENTFLOW_CAPS_PRIORITY_RESERVE", 1,
                                                "Slots of each rolling cap that each priority level keeps free "
                                                "for the levels above it (high > normal > low).")
    providers_reporting: Csv = env(
        "EVENTFLOW_PROVIDERS_REPORTING", (),
        "Providers whose delivery webhooks reach `eventflow webhooks` (e.g. sendgrid): an uncertain send to one "
        "is settled by its report instead of EVENTFLOW_UNCERTAIN_DELIVERY (needs the customer store).")
    send_report_window_seconds: PositiveFloat = env(
        "EVENTFLOW_SEND_REPORT_WINDOW_SECONDS", 600.0,
        "How long after an uncertain provider call its report may take to arrive; none by then: it was not "
        "accepted and is sent again.")
    phone_default_region: PhoneRegion | None = env(
        "EVENTFLOW_PHONE_DEFAULT_REGION", None,
        "Region (ISO 3166 code, e.g. DE) of phone and WhatsApp numbers written without a country code "
        "(0151 ...); unset: such numbers are refused (failed:InvalidAddress), every number must be international.")


# -- channels and providers -------------------------------------------------------------------------

class ChannelSettings(SettingsGroup):
    """Which implementation serves each channel; the outbox and development mode."""

    concern: ClassVar[str] = "channels"

    dev_mode: bool = env("EVENTFLOW_DEV_MODE", False, "Development mode: lets the outbox channel (a local file) "
                         "serve channels that journeys use. Set by `eventflow dev run` and the tests; never in "
                         "production.")
    email_provider: EmailProvider = env("EVENTFLOW_EMAIL_PROVIDER", "outbox",
                                        "Email channel implementation: outbox, sendgrid or smtp.")
    email_providers: EmailProviderList = env(
        "EVENTFLOW_EMAIL_PROVIDERS", (),
        "Email providers in failover order, e.g. sendgrid,smtp: a send goes to the next when one is unavailable "
        "(5xx, 429, unreachable, circuit open), never to two (needs the customer store); wins over "
        "EVENTFLOW_EMAIL_PROVIDER, which if also set must name the first.")
    provider_circuit_failures: PositiveInt = env(
        "EVENTFLOW_PROVIDER_CIRCUIT_FAILURES", 5,
        "Consecutive unavailable answers that open a failover provider's circuit breaker (its sends go to the next "
        "provider without calling it).")
    provider_circuit_open_seconds: PositiveFloat = env(
        "EVENTFLOW_PROVIDER_CIRCUIT_OPEN_SECONDS", 30.0,
        "How long an open circuit skips its provider before one probe call may try it (half-open).")
    sms_provider: MessagingProvider = env("EVENTFLOW_SMS_PROVIDER", "outbox",
                                          "SMS channel implementation: outbox or twilio.")
    whatsapp_provider: MessagingProvider = env("EVENTFLOW_WHATSAPP_PROVIDER", "outbox",
                                               "WhatsApp channel implementation: outbox or twilio.")
    push_provider: PushProvider = env("EVENTFLOW_PUSH_PROVIDER", "outbox",
                                      "App push channel implementation: outbox or fcm (Firebase Cloud Messaging).")
    webpush_provider: WebPushProvider = env("EVENTFLOW_WEBPUSH_PROVIDER", "outbox",
                                            "Browser push channel implementation: outbox or webpush (VAPID).")
    outbox_path: Path | None = env("EVENTFLOW_OUTBOX_PATH", None,
                                   "JSON Lines file the outbox channel writes; default <cache>/outbox.jsonl.")
    provider_timeout_seconds: PositiveFloat = env("EVENTFLOW_PROVIDER_TIMEOUT_SECONDS", 10.0,
                                                  "Per-request timeout of provider calls.")

    @model_validator(mode="after")
    def _one_email_choice(self) -> Self:
        if self.email_providers and "email_provider" in self.model_fields_set \
                and self.email_provider != self.email_providers[0]:
            # ConfigError (not ValueError) so the message names this variable, not the class.
            raise ConfigError(type(self).variable("email_providers"),
                              f"starts with {self.email_providers[0]} but {type(self).variable('email_provider')} "
                              f"is {self.email_provider}: set one of them")
        return self

    def providers(self, channel: str) -> tuple[str, ...]:
        """The implementations of a channel in failover order (the first is the primary); only email has several."""
        if channel == "email" and self.email_providers:
            return self.email_providers
        return (self.provider(channel),)

    def provider(self, channel: str) -> str:
        """The (primary) implementation of a channel of `core.vocabulary.ChannelName`: its ``<channel>_provider``
        field, or for email the first of ``email_providers`` when that is set."""
        if channel not in CHANNELS:
            raise KeyError(channel)
        if channel == "email" and self.email_providers:
            return self.email_providers[0]
        return str(getattr(self, f"{channel}_provider"))


class SendGridSettings(SettingsGroup):
    """The SendGrid email provider."""

    concern: ClassVar[str] = "channels"

    api_key: SecretStr | None = env("SENDGRID_API_KEY", None, "SendGrid API key (or SENDGRID_API_KEY_FILE).")
    api_key_file: Path | None = env("SENDGRID_API_KEY_FILE", None,
                                    "File holding the SendGrid API key (a mounted secret).")
    base_url: str = env("EVENTFLOW_SENDGRID_BASE_URL", "https://api.sendgrid.com",
                        "SendGrid API host (https://api.eu.sendgrid.com for EU subusers).")
    email_from: str | None = env("EVENTFLOW_EMAIL_FROM", None,
                                 "Sender address for email (required with sendgrid and smtp).")
    email_from_name: str = env("EVENTFLOW_EMAIL_FROM_NAME", "", "Sender display name for email.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_SENDGRID_RATE_PER_SECOND", 100.0,
                                         "SendGrid calls per second across all workers (Temporal's limit on the "
                                         "email send queue); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_SENDGRID_BURST", 100, "SendGrid token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "SENDGRID_API_KEY")


class SmtpSettings(SettingsGroup):
    """The SMTP email provider (the sender is EVENTFLOW_EMAIL_FROM and EVENTFLOW_EMAIL_FROM_NAME)."""

    concern: ClassVar[str] = "channels"

    host: str = env("EVENTFLOW_SMTP_HOST", "", "SMTP server host (required with smtp).")
    port: Port = env("EVENTFLOW_SMTP_PORT", 587, "SMTP server port: 587 for starttls, 465 for tls.")
    security: SmtpSecurityMode = env("EVENTFLOW_SMTP_SECURITY", "starttls",
                                     "starttls (upgrade, refused if the server cannot), tls (TLS from the first "
                                     "byte) or none (a local relay only).")
    username: str = env("EVENTFLOW_SMTP_USERNAME", "", "SMTP user name; empty for no AUTH.")
    password: SecretStr | None = env("EVENTFLOW_SMTP_PASSWORD", None,
                                     "SMTP password (or EVENTFLOW_SMTP_PASSWORD_FILE).")
    password_file: Path | None = env("EVENTFLOW_SMTP_PASSWORD_FILE", None,
                                     "File holding the SMTP password (a mounted secret).")
    ca_file: Path | None = env("EVENTFLOW_SMTP_CA_FILE", None,
                               "CA bundle to trust for the SMTP server instead of the system's.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_SMTP_RATE_PER_SECOND", 10.0,
                                         "SMTP messages per second across all workers (Temporal's limit on the "
                                         "email send queue); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_SMTP_BURST", 10, "SMTP token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_SMTP_PASSWORD")


class TwilioSettings(SettingsGroup):
    """The Twilio SMS and WhatsApp provider."""

    concern: ClassVar[str] = "channels"

    account_sid: str | None = env("TWILIO_ACCOUNT_SID", None, "Twilio account SID.")
    auth_token: SecretStr | None = env("TWILIO_AUTH_TOKEN", None, "Twilio auth token (or TWILIO_AUTH_TOKEN_FILE).")
    auth_token_file: Path | None = env("TWILIO_AUTH_TOKEN_FILE", None,
                                       "File holding the Twilio auth token (a mounted secret).")
    base_url: str = env("EVENTFLOW_TWILIO_BASE_URL", "",
                        "Twilio API base URL override (default https://api.twilio.com).")
    region: str = env("EVENTFLOW_TWILIO_REGION", "", "Twilio region (e.g. ie1) for regional processing.")
    edge: str = env("EVENTFLOW_TWILIO_EDGE", "", "Twilio edge location (e.g. dublin).")
    sms_from: str = env("EVENTFLOW_SMS_FROM", "", "Sender number for SMS.")
    whatsapp_from: str = env("EVENTFLOW_WHATSAPP_FROM", "", "Sender number for WhatsApp (whatsapp: prefix optional).")
    messaging_service_sid: str = env("EVENTFLOW_TWILIO_MESSAGING_SERVICE_SID", "",
                                     "Send through this Messaging Service instead of a number.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_TWILIO_RATE_PER_SECOND", 10.0,
                                         "Twilio calls per second across all workers, per channel send queue "
                                         "(Temporal's limit); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_TWILIO_BURST", 10, "Twilio token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "TWILIO_AUTH_TOKEN")


class FcmSettings(SettingsGroup):
    """Firebase Cloud Messaging HTTP v1, the app push provider."""

    concern: ClassVar[str] = "channels"

    service_account_file: Path | None = env(
        "EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE", None,
        "Google service account JSON key (a mounted secret) with the Firebase Cloud Messaging API; its project_id, "
        "client_email, private_key and token_uri are used (required with fcm).")
    project_id: str = env("EVENTFLOW_FCM_PROJECT_ID", "", "Firebase project id; default the service account's.")
    base_url: str = env("EVENTFLOW_FCM_BASE_URL", "https://fcm.googleapis.com", "FCM API base URL.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_FCM_RATE_PER_SECOND", 100.0,
                                         "FCM calls (one per device) per second across all workers; each worker's "
                                         "token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_FCM_BURST", 100, "FCM token bucket size.")


class WebPushSettings(SettingsGroup):
    """Web Push (RFC 8030) with VAPID (RFC 8292), the browser push provider."""

    concern: ClassVar[str] = "channels"

    vapid_private_key_file: Path | None = env(
        "EVENTFLOW_VAPID_PRIVATE_KEY_FILE", None,
        "PEM file of the VAPID P-256 private key (a mounted secret); browsers subscribe with its public key "
        "(required with webpush).")
    vapid_subject: str = env("EVENTFLOW_VAPID_SUBJECT", "",
                             "VAPID contact for push services, `mailto:ops@example.com` or an https URL (required "
                             "with webpush).")
    ttl_seconds: NonNegativeInt = env("EVENTFLOW_WEBPUSH_TTL_SECONDS", 86400,
                                      "How long a push service keeps a message for an offline browser.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_WEBPUSH_RATE_PER_SECOND", 100.0,
                                         "Web Push calls (one per browser) per second across all workers; each "
                                         "worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_WEBPUSH_BURST", 100, "Web Push token bucket size.")


# -- webhooks ---------------------------------------------------------------------------------------

#: Prefix of the environment variables that hold webhook Secrets (``WEBHOOK_SECRET_CRM_TOKEN`` is ``crm_token``).
WEBHOOK_SECRET_PREFIX = "WEBHOOK_SECRET_"


class WebhookStepSettings(SettingsGroup):
    """Where ``webhook`` steps may call, and where their Secrets are."""

    concern: ClassVar[str] = "webhook steps"

    allowed_hosts: Csv = env("EVENTFLOW_WEBHOOK_ALLOWED_HOSTS", (),
                             "Hosts webhook steps may call, comma-separated: `host` (exact name, port 443 for https, "
                             "80 for http) or `host:port`; none when unset.")
    secrets_dir: Path | None = env("EVENTFLOW_WEBHOOK_SECRETS_DIR", None,
                                   "Folder of mounted webhook Secrets, one file per name; else WEBHOOK_SECRET_{NAME} variables.")
    secret_hosts: SecretHosts = env("EVENTFLOW_WEBHOOK_SECRET_HOSTS", {},
                                    "Where each webhook Secret may be sent: `crm_token=crm.example.com crm.example.com:8443,"
                                    "other=host` (hosts as in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS, space-separated); a "
                                    "Secret not listed is never sent.")
    max_saved_bytes: PositiveInt = env("EVENTFLOW_WEBHOOK_MAX_SAVED_BYTES", 16384,
                                       "Largest response (compact JSON) a webhook step's save_as keeps; a larger one "
                                       "fails the step (WebhookSavedTooLarge) and nothing is saved.")
    allow_loopback: bool = env("EVENTFLOW_WEBHOOK_ALLOW_LOOPBACK", False,
                               "Test and development only: let webhook steps call loopback addresses (127.0.0.0/8, "
                               "::1). Private, link-local and other non-public addresses are refused regardless.")


def webhook_secret_environ(environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """Webhook Secrets given as ``WEBHOOK_SECRET_<NAME>`` variables, by lower-case name."""
    env = os.environ if environ is None else environ
    return {name.removeprefix(WEBHOOK_SECRET_PREFIX).lower(): SecretStr(value)
            for name, value in env.items() if name.startswith(WEBHOOK_SECRET_PREFIX) and value}


