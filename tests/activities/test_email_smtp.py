"""The SMTP channel against a local ``aiosmtpd`` server: STARTTLS or TLS, AUTH, multipart/alternative, errors."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.channels import OutgoingMessage
from activities.config import build_channels
from activities.email_smtp import SmtpChannel, SmtpConfig, SmtpSecurity, message_id
from activities.errors import InvalidAddressError, PermanentSendError, ProviderAuthError, RetryableSendError
from activities.send import SendPolicy
from core.errors import ConfigError

MESSAGE = OutgoingMessage(idempotency_key="journey:x:c1/thank_you", channel="email", to="ada@example.com",
                          subject="Order 42", body="Thanks for order 42",
                          html='<html><body><p style="color: red;">Thanks for order 42</p></body></html>')


@dataclass
class _Handler:
    """Records each message; refuses recipients at nobody@."""

    messages: list[Any] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802 - aiosmtpd's hook name
                          rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope, session.ssl is not None))
        return "250 OK queued"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"s3cret")
        if ok:
            self.logins.append(data.login)
        # handled=False: aiosmtpd answers 535 itself (its default, handled=True, answers nothing).
        return AuthResult(success=ok, handled=False)

    def received(self) -> list[EmailMessage]:
        return [message_from_bytes(envelope.original_content, policy=policy.default)
                for envelope, _ in self.messages]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, which the client trusts as its CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("smtp-tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[tuple[_Handler, int]]:
    """A server on port 587's terms: STARTTLS required before anything, AUTH only over TLS."""
    handler, port = _Handler(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=_server_tls(certificate),
                            require_starttls=True, authenticator=handler.authenticate, auth_require_tls=True)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _channel(port: int, certificate: tuple[Path, Path], **options: Any) -> SmtpChannel:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "from_email": "shop@example.com",
                                "from_name": "Shop", "username": "shop", "password": "s3cret",
                                "ca_file": certificate[0], "timeout_seconds": 5, **options}
    return SmtpChannel(SmtpConfig(**settings))


async def test_starttls_auth_and_a_multipart_alternative_with_a_message_id_from_the_key(
        smtp_server: tuple[_Handler, int], certificate: tuple[Path, Path]) -> None:
    handler, port = smtp_server

    result = await _channel(port, certificate).deliver(MESSAGE)
    again = await _channel(port, certificate).deliver(MESSAGE)  # a second attempt at the same send

    assert (result.status, result.provider) == ("sent", "smtp")
    assert result.provider_message_id == again.provider_message_id == message_id(MESSAGE.idempotency_key,
                                                                                 "shop@example.com")
    assert handler.logins == [b"shop", b"shop"] and all(tls for _, tls in handler.messages)
    envelope, _ = handler.messages[0]
    assert (envelope.mail_from, envelope.rcpt_tos) == ("shop@example.com", ["ada@example.com"])
    first, second = handler.received()
    assert first["Message-ID"] == second["Message-ID"] == result.provider_message_id
    assert first["Message-ID"].endswith("@example.com>") and "thank_you" not in first["Message-ID"]
    assert (first["From"], first["To"], first["Subject"]) == ("Shop <shop@example.com>", "ada@example.com", "Order 42")
    assert first["X-Eventflow-Idempotency-Key"] == MESSAGE.idempotency_key
    assert first.get_content_type() == "multipart/alternative"
    text, html = first.iter_parts()
    assert (text.get_content_type(), text.get_content().strip()) == ("text/plain", "Thanks for order 42")
    assert (html.get_content_type(), html.get_content().strip()) == ("text/html", MESSAGE.html)


async def test_list_unsubscribe_headers_reach_the_smtp_server(
        smtp_server: tuple[_Handler, int], certificate: tuple[Path, Path]) -> None:
    handler, port = smtp_server
    headers = {"List-Unsubscribe": "<https://prefs.example.com/u/t0k3n>, <mailto:unsubscribe@example.com>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    await _channel(port, certificate).deliver(replace(MESSAGE, headers=headers))

    (received,) = handler.received()
    # A long value is folded onto the next line (RFC 5322); unfolded it is the same value.
    assert {name: str(received[name]).strip() for name in headers} == headers


async def test_implicit_tls_sends_text_only_messages_as_text(certificate: tuple[Path, Path]) -> None:
    handler, port = _Handler(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=_server_tls(certificate),
                            authenticator=handler.authenticate, auth_require_tls=False)  # TLS from the first byte
    controller.start()
    try:
        text_only = OutgoingMessage(idempotency_key="k", channel="email", to="ada@example.com", subject="s",
                                    body="plain")
        await _channel(port, certificate, security=SmtpSecurity.TLS).deliver(text_only)
    finally:
        controller.stop()

    [received] = handler.received()
    assert received.get_content_type() == "text/plain" and received.get_content().strip() == "plain"
    assert handler.logins == [b"shop"]


async def test_refusals_are_permanent_and_an_unreachable_server_is_retried(
        smtp_server: tuple[_Handler, int], certificate: tuple[Path, Path]) -> None:
    handler, port = smtp_server
    nobody = OutgoingMessage(idempotency_key="k", channel="email", to="nobody@example.com", subject="s", body="b")

    with pytest.raises(InvalidAddressError):
        await _channel(port, certificate).deliver(nobody)
    with pytest.raises(ProviderAuthError):
        await _channel(port, certificate, password="wrong").deliver(MESSAGE)
    with pytest.raises(RetryableSendError):
        await _channel(_free_port(), certificate).deliver(MESSAGE)
    assert handler.messages == []


async def test_starttls_required_never_falls_back_to_a_plain_connection(certificate: tuple[Path, Path]) -> None:
    handler, port = _Handler(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)  # offers no STARTTLS
    controller.start()
    try:
        with pytest.raises(PermanentSendError):
            await _channel(port, certificate).deliver(MESSAGE)
    finally:
        controller.stop()

    assert handler.messages == [] and handler.logins == []


def test_email_provider_smtp_builds_the_channel_with_the_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    environ = {"EVENTFLOW_OUTBOX_PATH": str(tmp_path / "o.jsonl"), "EVENTFLOW_EMAIL_PROVIDER": "smtp",
               "EVENTFLOW_SMTP_HOST": "smtp.example.com", "EVENTFLOW_SMTP_USERNAME": "shop",
               "EVENTFLOW_SMTP_PASSWORD_FILE": str(secret), "EVENTFLOW_EMAIL_FROM": "shop@example.com"}

    channel = build_channels(environ)["email"]

    assert isinstance(channel, SmtpChannel)
    assert channel._config.password == "s3cret" and channel._config.security is SmtpSecurity.STARTTLS
    with pytest.raises(ConfigError) as missing:
        build_channels({**environ, "EVENTFLOW_SMTP_HOST": ""})
    assert missing.value.variable == "EVENTFLOW_SMTP_HOST"


@dataclass
class _Slow(_Handler):
    """Answers every step just inside the per-step timeout, so only a bound on the whole call ends it."""

    delay: float = 0.0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802 - aiosmtpd's hook name
                          mail_options: list[str]) -> str:
        await asyncio.sleep(self.delay)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802 - aiosmtpd's hook name
                          rcpt_options: list[str]) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_a_whole_call_ends_within_twice_the_timeout_so_it_fits_the_default_lease() -> None:
    config = SmtpConfig(host="127.0.0.1", from_email="shop@example.com")
    assert SmtpChannel(config).call_timeout_seconds == 2 * config.timeout_seconds
    policy = SendPolicy()
    assert SmtpChannel(config).call_timeout_seconds + policy.lease_margin_seconds <= policy.lease_seconds


async def test_a_call_past_its_bound_is_cut_and_may_have_delivered() -> None:
    handler, port = _Slow(delay=0.4), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channel = SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, from_email="shop@example.com",
                                         security=SmtpSecurity.NONE, timeout_seconds=0.5))
        started = time.monotonic()
        with pytest.raises(RetryableSendError) as raised:
            await channel.deliver(MESSAGE)
        # MAIL, RCPT and DATA each answer inside 0.5 s, together after 1.2 s: the 1 s bound ends the call.
        assert time.monotonic() - started < 1.15
        assert raised.value.delivery_uncertain
    finally:
        controller.stop()
