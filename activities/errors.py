"""The failure taxonomy of a provider call: retryable versus permanent, with the provider's verdict.

Channels raise these; the send activity turns them into Temporal ``ApplicationError`` s whose
``type`` is the class's ``error_type`` (permanent ones non-retryable, rate limits with
``next_retry_delay``), so the workflow's retry policy and the journey record see one vocabulary.
"""

from __future__ import annotations

from core.errors import EventflowError


class LedgerUnavailableError(EventflowError):
    """The delivery ledger could not answer now (its database is down, restarting or overloaded).

    Nothing was decided: the caller waits and asks again (the send activity retries its record of a
    provider's answer; Temporal retries the attempt otherwise).
    """


class SendError(EventflowError):
    """A provider did not accept a message.

    Attributes:
        error_type: the ``ApplicationError`` type this becomes (``InvalidAddress``, ...).
        provider: ``sendgrid`` or ``twilio``.
        status: the HTTP status, when there was a response.
        provider_code: the provider's own error code (Twilio's ``21610``), when given.
    """

    error_type = "ProviderError"

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 provider_code: int | str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.provider_code = provider_code


class RetryableSendError(SendError):
    """Worth trying again: timeouts, connection errors, 429 and 5xx.

    Attributes:
        retry_after_seconds: the provider's ``Retry-After``, when it sent one.
        delivery_uncertain: the request may have reached the provider (a timeout after sending),
            so the next attempt must reconcile before sending again.
    """

    error_type = "ProviderUnavailable"

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 provider_code: int | str | None = None, retry_after_seconds: float | None = None,
                 delivery_uncertain: bool = False) -> None:
        super().__init__(message, provider=provider, status=status, provider_code=provider_code)
        self.retry_after_seconds = retry_after_seconds
        self.delivery_uncertain = delivery_uncertain


class RateLimitedError(RetryableSendError):
    """HTTP 429 (or the provider's own rate-limit code)."""

    error_type = "ProviderRateLimited"


class PermanentSendError(SendError):
    """Retrying cannot help: 4xx validation or authentication errors."""

    error_type = "ProviderRejected"


class InvalidAddressError(PermanentSendError):
    """The email address or phone number is invalid or cannot receive this channel."""

    error_type = "InvalidAddress"


class DeviceGoneError(InvalidAddressError):
    """The push service no longer knows the device (Web Push 404/410, FCM ``UNREGISTERED``): an app
    uninstalled, a browser subscription expired or revoked. The device is removed from the profile."""

    error_type = "DeviceUnregistered"


class RecipientUnsubscribedError(PermanentSendError):
    """The provider says the recipient opted out (Twilio 21610 after a STOP reply); counts as an opt-out."""

    error_type = "RecipientUnsubscribed"


class ProviderAuthError(PermanentSendError):
    """Credentials were refused (401/403)."""

    error_type = "ProviderAuthFailed"


class ChannelUnavailableError(PermanentSendError):
    """No provider serves the channel outside development mode: the message is not written anywhere."""

    error_type = "ChannelUnavailable"


class OutsideWhatsAppWindowError(PermanentSendError):
    """A free-form WhatsApp message outside the 24-hour window, with no template to send instead.

    Raised by the send activity before any provider call (activities/whatsapp.py): WhatsApp would
    refuse it, and retrying cannot open the window.
    """

    error_type = "OutsideWhatsAppWindow"


#: Every permanent error type, for ``RetryPolicy.non_retryable_error_types``.
PERMANENT_ERROR_TYPES: tuple[str, ...] = (
    PermanentSendError.error_type,
    InvalidAddressError.error_type,
    DeviceGoneError.error_type,
    RecipientUnsubscribedError.error_type,
    ProviderAuthError.error_type,
    ChannelUnavailableError.error_type,
    OutsideWhatsAppWindowError.error_type,
    "ChannelNotConfigured",
    "MissingAddress",
    "TemplateRenderError",
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; HTTP dates are rare for APIs)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
