"""The codec server and the provider webhook service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Self

from pydantic import SecretStr, model_validator

from core.errors import ConfigError
from core.settings._base import Csv, Port, PositiveFloat, PositiveInt, SettingsGroup, _secret_from_file, env

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


