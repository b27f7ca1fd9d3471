"""Provider signatures, checked with the providers' own SDK helpers.

SendGrid signs each Event Webhook POST with ECDSA (P-256, SHA-256) over the timestamp header
followed by the raw body; `sendgrid.helpers.eventwebhook.EventWebhook` verifies it against the
account's verification key. A signed timestamp outside the replay window is refused too, so a
captured request cannot be replayed later. Twilio signs with HMAC-SHA1 over the full public URL
and the sorted form parameters; `twilio.request_validator.RequestValidator` checks it, which is
why the service must know the URL the provider was given (``EVENTFLOW_WEBHOOKS_PUBLIC_URL``).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from twilio.request_validator import RequestValidator

from core.errors import ConfigError

SENDGRID_SIGNATURE_HEADER = EventWebhookHeader.SIGNATURE
SENDGRID_TIMESTAMP_HEADER = EventWebhookHeader.TIMESTAMP
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
#: Epoch seconds have 10 digits until the year 2286; anything longer is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class SendGridVerifier:
    """Checks SendGrid's ECDSA signature and the replay window.

    Args:
        verification_key: the base64 public key shown in SendGrid's Mail Settings.
        replay_window_seconds: the largest distance between the signed timestamp and now.
    """

    def __init__(self, verification_key: str, replay_window_seconds: float, *,
                 variable: str = "SENDGRID_WEBHOOK_VERIFICATION_KEY") -> None:
        try:
            self._helper = EventWebhook(verification_key.strip())
        except (ValueError, TypeError) as exc:
            raise ConfigError(variable, "is not a valid ECDSA public key (base64, as SendGrid shows it)") from exc
        self._window = replay_window_seconds

    def verify(self, body: bytes, headers: Mapping[str, str], now_epoch_seconds: float) -> bool:
        """Whether ``body`` was signed by SendGrid within the replay window."""
        signature = headers.get(SENDGRID_SIGNATURE_HEADER, "")
        timestamp = headers.get(SENDGRID_TIMESTAMP_HEADER, "")
        # ASCII digits only, and few of them: str.isdigit() admits '²', which int() refuses, and a
        # 5,000-digit number is past int()'s limit; either would raise before the signature is checked.
        if not signature or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            return False
        try:
            if abs(now_epoch_seconds - int(timestamp)) > self._window:
                return False
            payload = body.decode("utf-8")
            return bool(self._helper.verify_signature(payload, signature, timestamp))
        except (UnicodeDecodeError, binascii.Error, ValueError):
            return False


class TwilioVerifier:
    """Checks ``X-Twilio-Signature`` over the URL Twilio was given (the public base URL + path and query)."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        self._public_url = public_url.rstrip("/")

    def public_url_of(self, path_qs: str) -> str:
        return f"{self._public_url}{path_qs}"

    def verify(self, path_qs: str, form: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        signature = headers.get(TWILIO_SIGNATURE_HEADER, "")
        if not signature:
            return False
        return bool(self._validator.validate(self.public_url_of(path_qs), dict(form), signature))
