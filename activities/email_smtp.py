"""Email through any SMTP server (a company relay, Amazon SES, Postmark, Mailgun) with ``aiosmtplib``.

One connection per message, so a broken connection never carries over to the next send. The
message is ``multipart/alternative`` (text, then HTML) when the template has an HTML part. Its
``Message-ID`` is derived from the idempotency key, so a message sent twice after an interrupted
attempt carries the same id, and receiving servers and clients that deduplicate on it show one;
the key also travels as a header. SMTP has no way to ask whether an earlier attempt's message
arrived (``reconciles`` is false), as with SendGrid.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path

import aiosmtplib

from activities.channels import OutgoingMessage
from activities.email_sendgrid import IDEMPOTENCY_HEADER
from activities.errors import (
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RetryableSendError,
    SendError,
)
from activities.notifications import SendResult
from activities.outcomes import SendStatus
from activities.ratelimit import TokenBucket

PROVIDER = "smtp"


class SmtpSecurity(enum.StrEnum):
    """How the connection is protected."""

    #: Plain connection upgraded with STARTTLS before anything else; refused if the server cannot (port 587).
    STARTTLS = "starttls"
    #: TLS from the first byte (port 465).
    TLS = "tls"
    #: No TLS at all: a relay on the same host or network only.
    NONE = "none"


@dataclass(frozen=True)
class SmtpConfig:
    """An SMTP server and the sender.

    Attributes:
        host, port: the server.
        security: `SmtpSecurity`.
        username, password: credentials; no AUTH when the username is empty.
        from_email, from_name: the sender.
        ca_file: a CA bundle to trust instead of the system's (a private relay's own CA).
        timeout_seconds: per-operation timeout; the whole call ends at twice it.
    """

    host: str
    from_email: str
    port: int = 587
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str = ""
    password: str = ""
    from_name: str = ""
    ca_file: Path | None = None
    timeout_seconds: float = 10.0


def message_id(idempotency_key: str, from_email: str) -> str:
    """``<hash-of-key@sender-domain>``: the same for every attempt at one send, and naming no customer."""
    domain = from_email.rpartition("@")[2] or "eventflow.invalid"
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


class SmtpChannel:
    """The ``email`` channel backed by an SMTP server."""

    name = PROVIDER
    reconciles = False

    def __init__(self, config: SmtpConfig, limiter: TokenBucket | None = None) -> None:
        self._config = config
        self._limiter = limiter
        self._tls = (ssl.create_default_context(cafile=str(config.ca_file)) if config.ca_file is not None
                     else ssl.create_default_context())

    @property
    def limiter(self) -> TokenBucket | None:
        return self._limiter

    @property
    def call_timeout_seconds(self) -> float:
        # Connect, greeting, STARTTLS, AUTH, MAIL, RCPT and DATA each get the timeout, and `deliver`
        # ends the whole exchange at this bound, so a call fits the send lease (ADR-9) like FCM's.
        return self._config.timeout_seconds * 2

    def build(self, message: OutgoingMessage) -> EmailMessage:
        """The MIME message: text, or text and HTML as ``multipart/alternative``."""
        config = self._config
        mail = EmailMessage()
        mail["From"] = formataddr((config.from_name, message.sender or config.from_email))
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = message_id(message.idempotency_key, config.from_email)
        mail[IDEMPOTENCY_HEADER] = message.idempotency_key
        for name, value in message.headers.items():  # List-Unsubscribe and its One-Click POST (RFC 8058)
            mail[name] = value
        mail.set_content(message.body)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        config, mail = self._config, self.build(message)
        client = aiosmtplib.SMTP(hostname=config.host, port=config.port, username=config.username or None,
                                 password=config.password or None, use_tls=config.security is SmtpSecurity.TLS,
                                 start_tls=config.security is SmtpSecurity.STARTTLS, tls_context=self._tls,
                                 timeout=config.timeout_seconds)
        sent = False
        try:
            # The whole exchange, not each step, ends at the bound; then the connection is dropped at
            # once (no QUIT to wait for), so the call cannot outlive the lease it was made in.
            async with asyncio.timeout(self.call_timeout_seconds):
                await client.connect()
                await client.send_message(mail)
                sent = True  # the server took it with its reply to DATA; QUIT is a courtesy
                await client.quit()
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            if not sent:
                raise _failure(exc) from exc
        finally:
            client.close()
        return SendResult(status=SendStatus.SENT, provider=PROVIDER, provider_message_id=str(mail["Message-ID"]))

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None


def _failure(exc: aiosmtplib.SMTPException | TimeoutError | OSError) -> SendError:
    if isinstance(exc, aiosmtplib.SMTPException):
        return _classify(exc)
    if isinstance(exc, TimeoutError):
        # Cut at the bound: the server may have taken the message in the step that was still running.
        return RetryableSendError("smtp call outlived its bound", provider=PROVIDER, delivery_uncertain=True)
    return RetryableSendError(f"smtp connection failed: {type(exc).__name__}", provider=PROVIDER)


def _classify(exc: aiosmtplib.SMTPException) -> SendError:
    """4xx replies and lost connections are worth retrying; 5xx are not (RFC 5321 4.2.1)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return ProviderAuthError(f"smtp refused the credentials ({exc.code})", provider=PROVIDER, status=exc.code)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib raises the base class when the server lacks STARTTLS or AUTH that the settings require.
        return PermanentSendError(f"smtp server lacks what the settings require: {exc}"[:300], provider=PROVIDER)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        if all(code >= 500 for code in codes):
            return InvalidAddressError(f"smtp refused the recipient ({', '.join(map(str, codes))})",
                                       provider=PROVIDER, status=codes[0] if codes else None)
        return RetryableSendError(f"smtp deferred the recipient ({', '.join(map(str, codes))})", provider=PROVIDER)
    if isinstance(exc, (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError)):
        return RetryableSendError(f"smtp unreachable: {type(exc).__name__}", provider=PROVIDER)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected)):
        # The message may have been accepted just before the connection went.
        return RetryableSendError(f"smtp connection lost: {type(exc).__name__}", provider=PROVIDER,
                                  delivery_uncertain=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code >= 500:
            return PermanentSendError(f"smtp rejected the message ({exc.code})", provider=PROVIDER, status=exc.code)
        return RetryableSendError(f"smtp {exc.code}", provider=PROVIDER, status=exc.code)
    return RetryableSendError(f"smtp failed: {type(exc).__name__}", provider=PROVIDER, delivery_uncertain=True)
