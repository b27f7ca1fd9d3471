"""The codec server, the provider webhook service and the preference center."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Self

from pydantic import SecretStr, model_validator

from core.errors import ConfigError
from core.settings._base import Csv, Port, PositiveFloat, PositiveInt, SettingsGroup, _secret_from_file, env
from core.signing import SigningKeys, SigningKeysError

# -- codec server -----------------------------------------------------------------------------------

#: The shortest bearer token the codec server starts with (a guessable token is a decryption oracle).
CODEC_SERVER_MIN_TOKEN_CHARS = 32


class CodecServerSettings(SettingsGroup):
    """``eventflow codec-server``: the Temporal Web UI's and CLI's codec endpoint (it decrypts payloads)."""

    concern: ClassVar[str] = "codec server"

    port: Port = env("EVENTFLOW_CODEC_SERVER_PORT", 8888, "Port of the codec server (/encode, /decode, /healthz).")
    token: SecretStr | None = env("EVENTFLOW_CODEC_SERVER_TOKEN", None, "Bearer token every /encode and /decode "
                                  "request must carry (required, at least 32 characters; or EVENTFLOW_CODEC_SERVER_TOKEN_FILE).")
    token_file: Path | None = env("EVENTFLOW_CODEC_SERVER_TOKEN_FILE", None,
                                  "File holding the codec server's bearer token (a mounted secret).")
    cors_origins: Csv = env("EVENTFLOW_CODEC_SERVER_CORS_ORIGINS", ("http://localhost:8233",),
                            "Comma-separated origins of the Temporal Web UI allowed to call the codec server.")
    max_body_bytes: PositiveInt = env("EVENTFLOW_CODEC_SERVER_MAX_BODY_BYTES", 4 * 1024 * 1024,
                                      "Largest request body accepted (413 above).")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_CODEC_SERVER_TOKEN")

    @model_validator(mode="after")
    def _token_required(self) -> Self:
        variable = self.variable("token_file" if self.token_file else "token")
        if self.token is None or not self.token.get_secret_value():
            raise ConfigError(variable, "is required: the codec server decrypts customer data")
        if len(self.token.get_secret_value()) < CODEC_SERVER_MIN_TOKEN_CHARS:
            raise ConfigError(variable, f"is shorter than {CODEC_SERVER_MIN_TOKEN_CHARS} characters: the codec "
                                        "server decrypts customer data (generate one with `openssl rand -hex 32`)")
        return self


# -- webhooks ---------------------------------------------------------------------------------------

#: The shortest device API token accepted (a guessable one would let anyone redirect push notifications).
DEVICE_API_MIN_TOKEN_CHARS = 32

class WebhookUrlSettings(SettingsGroup):
    """Where providers reach `eventflow webhooks`: the worker asks for callbacks there, the service checks."""

    concern: ClassVar[str] = "webhooks"

    public_url: str = env("EVENTFLOW_WEBHOOKS_PUBLIC_URL", "",
                          "Externally visible base URL of `eventflow webhooks` (`https://hooks.example.com`): the "
                          "worker sends Twilio status callbacks there, the service checks Twilio signatures "
                          "against it. Empty: no status callbacks.")

    @model_validator(mode="after")
    def _absolute(self) -> Self:
        if self.public_url and not re.match(r"^https?://[^/]+", self.public_url):
            raise ConfigError(self.variable("public_url"), "must be an absolute http(s) URL")
        return self


class WebhookSettings(SettingsGroup):
    """The webhook service: its port, bounds, the feedback topic and the SendGrid verification key."""

    concern: ClassVar[str] = "webhooks"

    port: Port = env("EVENTFLOW_WEBHOOKS_PORT", 8080, "Port the provider webhooks are served on.")
    feedback_topic: str = env("EVENTFLOW_FEEDBACK_TOPIC", "delivery-feedback",
                              "Kafka topic the webhook service hands verified reports to.")
    feedback_group: str = env("EVENTFLOW_FEEDBACK_CONSUMER_GROUP", "eventflow-feedback",
                              "Consumer group that applies the feedback topic to the ledger and the journeys.")
    sendgrid_verification_key: SecretStr | None = env(
        "SENDGRID_WEBHOOK_VERIFICATION_KEY", None,
        "SendGrid Event Webhook verification key (base64 public key; or SENDGRID_WEBHOOK_VERIFICATION_KEY_FILE). "
        "Unset: SendGrid events are refused.")
    sendgrid_verification_key_file: Path | None = env("SENDGRID_WEBHOOK_VERIFICATION_KEY_FILE", None,
                                                      "File holding the SendGrid verification key.")
    replay_window_seconds: PositiveFloat = env("EVENTFLOW_WEBHOOKS_REPLAY_WINDOW_SECONDS", 300.0,
                                               "SendGrid requests whose signed timestamp is further than this "
                                               "from now are refused (replays).")
    max_body_bytes: PositiveInt = env("EVENTFLOW_WEBHOOKS_MAX_BODY_BYTES", 1_048_576,
                                      "Largest webhook body accepted (413 above).")
    request_deadline_seconds: PositiveFloat = env("EVENTFLOW_WEBHOOKS_REQUEST_DEADLINE_SECONDS", 10.0,
                                                  "Deadline of one webhook request, hand-off included.")
    max_connections: PositiveInt = env("EVENTFLOW_WEBHOOKS_MAX_CONNECTIONS", 256,
                                       "Open webhook connections at most; the next one is answered 503.")
    max_connections_per_source: PositiveInt = env(
        "EVENTFLOW_WEBHOOKS_MAX_CONNECTIONS_PER_SOURCE", 64,
        "Open webhook connections one IP address may hold; its next one is answered 503, so one client "
        "cannot take every slot (providers send from several addresses).")
    idle_seconds: PositiveFloat = env(
        "EVENTFLOW_WEBHOOKS_IDLE_SECONDS", 2.0,
        "How long a kept-alive webhook connection may sit idle before it is closed (also the deadline of "
        "a new connection's first request line and headers).")

    device_api_tokens: SecretStr | None = env(
        "EVENTFLOW_DEVICE_API_TOKENS", None,
        "Bearer tokens of the device API (POST/DELETE `/customers/{id}/devices`), one a line (two while rotating), "
        f"at least {DEVICE_API_MIN_TOKEN_CHARS} characters each (`openssl rand -hex 32`); or "
        "EVENTFLOW_DEVICE_API_TOKENS_FILE. Unset: every device API request is refused (401).")
    device_api_tokens_file: Path | None = env("EVENTFLOW_DEVICE_API_TOKENS_FILE", None,
                                              "File holding the device API's bearer tokens (a mounted Secret).")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: object) -> object:
        return _secret_from_file(_secret_from_file(data, "SENDGRID_WEBHOOK_VERIFICATION_KEY"),
                                 "EVENTFLOW_DEVICE_API_TOKENS")

    @model_validator(mode="after")
    def _long_device_tokens(self) -> Self:
        short = [token for token in self.device_tokens() if len(token) < DEVICE_API_MIN_TOKEN_CHARS]
        if short:
            variable = self.variable("device_api_tokens_file" if self.device_api_tokens_file else "device_api_tokens")
            raise ConfigError(variable, f"holds a token shorter than {DEVICE_API_MIN_TOKEN_CHARS} characters: it "
                                        "lets callers change where customers' notifications go "
                                        "(generate one with `openssl rand -hex 32`)")
        return self

    def device_tokens(self) -> tuple[str, ...]:
        """The device API's accepted bearer tokens (none: the API refuses every request)."""
        text = self.device_api_tokens.get_secret_value() if self.device_api_tokens is not None else ""
        return tuple(line.strip() for line in text.splitlines() if line.strip())




# -- preferences -----------------------------------------------------------------------------------

#: The shortest API token the preference center accepts (it reads and changes anyone's consent).
PREFERENCES_MIN_API_TOKEN_CHARS = 32


class PreferenceLinkSettings(SettingsGroup):
    """Signed links to the preference center: the worker puts them in messages, the center checks them."""

    concern: ClassVar[str] = "preferences"

    public_url: str = env("EVENTFLOW_PREFERENCES_PUBLIC_URL", "",
                          "Externally visible base URL of `eventflow preferences` (`https://prefs.example.com`): "
                          "templates get `{{ preferences_url }}` and emails a List-Unsubscribe header pointing there. "
                          "Empty: no links and no List-Unsubscribe header (development).")
    signing_keys: SecretStr | None = env("EVENTFLOW_PREFERENCES_SIGNING_KEYS", None,
                                         "Keys that sign and check preference links (HMAC-SHA256) as `id=base64,"
                                         "id=base64` (32+ bytes each); required with EVENTFLOW_PREFERENCES_PUBLIC_URL "
                                         "(or EVENTFLOW_PREFERENCES_SIGNING_KEYS_FILE).")
    signing_keys_file: Path | None = env("EVENTFLOW_PREFERENCES_SIGNING_KEYS_FILE", None,
                                         "File holding the preference link keys, one `id=base64` a line (a mounted "
                                         "Secret); wins over EVENTFLOW_PREFERENCES_SIGNING_KEYS.")
    signing_key_id: str | None = env("EVENTFLOW_PREFERENCES_SIGNING_KEY_ID", None,
                                     "Id of the key new links are signed with (the others only verify: rotation); "
                                     "optional with one key.")
    link_days: PositiveInt = env("EVENTFLOW_PREFERENCES_LINK_DAYS", 30,
                                 "How long a message's preference page link works.")
    unsubscribe_days: PositiveInt = env("EVENTFLOW_PREFERENCES_UNSUBSCRIBE_DAYS", 90,
                                        "How long an email's one-click List-Unsubscribe URL works.")
    unsubscribe_mailto: str = env("EVENTFLOW_PREFERENCES_UNSUBSCRIBE_MAILTO", "",
                                  "Address of the List-Unsubscribe mailto alternative (`unsubscribe@example.com`); "
                                  "empty: the https URL only.")

    @model_validator(mode="before")
    @classmethod
    def _signing_keys_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_PREFERENCES_SIGNING_KEYS")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.public_url and not re.match(r"^https?://[^/]+", self.public_url):
            raise ConfigError(self.variable("public_url"), "must be an absolute http(s) URL")
        if self.unsubscribe_mailto and not re.match(r"^[^@\s<>]+@[^@\s<>]+$", self.unsubscribe_mailto):
            raise ConfigError(self.variable("unsubscribe_mailto"), "must be an email address")
        if self.signing_keys is None:
            if self.public_url:
                raise ConfigError(self.variable("signing_keys"), "is required with EVENTFLOW_PREFERENCES_PUBLIC_URL: "
                                  "links are signed")
            if self.signing_key_id is not None:
                raise ConfigError(self.variable("signing_key_id"), "is set but no signing keys are")
            return self
        try:
            self.keys()
        except SigningKeysError as exc:
            variable = "signing_key_id" if exc.signing_key_id else \
                "signing_keys_file" if self.signing_keys_file else "signing_keys"
            raise ConfigError(self.variable(variable), str(exc)) from None
        return self

    def keys(self) -> SigningKeys | None:
        """The link keys, or None when none are configured."""
        if self.signing_keys is None:
            return None
        return SigningKeys.parse(self.signing_keys.get_secret_value(), self.signing_key_id)


class PreferenceCenterSettings(SettingsGroup):
    """``eventflow preferences``: the hosted preference page, one-click unsubscribe and the JSON API."""

    concern: ClassVar[str] = "preferences"

    port: Port = env("EVENTFLOW_PREFERENCES_PORT", 8090,
                     "Port of the preference center (pages, one-click unsubscribe, JSON API, /healthz).")
    api_token: SecretStr | None = env("EVENTFLOW_PREFERENCES_API_TOKEN", None,
                                      "Bearer token of the JSON API (`/api/v1/customers/{id}/preferences`) for your "
                                      "own apps; at least 32 characters; unset: the API answers 404 (or "
                                      "EVENTFLOW_PREFERENCES_API_TOKEN_FILE).")
    api_token_file: Path | None = env("EVENTFLOW_PREFERENCES_API_TOKEN_FILE", None,
                                      "File holding the JSON API's bearer token (a mounted secret).")
    form_minutes: PositiveInt = env("EVENTFLOW_PREFERENCES_FORM_MINUTES", 60,
                                    "How long an opened preference page may be submitted; each form is submitted "
                                    "once (a replayed form is refused).")
    max_body_bytes: PositiveInt = env("EVENTFLOW_PREFERENCES_MAX_BODY_BYTES", 65536,
                                      "Largest request body accepted (413 above).")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_PREFERENCES_API_TOKEN")

    @model_validator(mode="after")
    def _token_long_enough(self) -> Self:
        if self.api_token is not None and len(self.api_token.get_secret_value()) < PREFERENCES_MIN_API_TOKEN_CHARS:
            raise ConfigError(self.variable("api_token_file" if self.api_token_file else "api_token"),
                              f"is shorter than {PREFERENCES_MIN_API_TOKEN_CHARS} characters: it reads and changes "
                              "every customer's consent (generate one with `openssl rand -hex 32`)")
        return self
