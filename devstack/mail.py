"""A local SMTP server for development (``eventflow dev mail-server``): it keeps every message it is sent.

It speaks plain SMTP on loopback (no TLS, no AUTH: the SMTP channel's ``EVENTFLOW_SMTP_SECURITY=none``,
"a local relay only") and accepts any recipient. Each message is kept whole as ``messages/N.eml`` in
the folder (open it in a mail client, or its HTML part in a browser) and summarised as one JSON line
of ``received.jsonl``: sender, recipients, subject, Message-ID, List-Unsubscribe, the MIME structure
and the text and HTML parts. The server is ``aiosmtpd`` (installed into ``.venv`` with the test
tools by ``make run``; the SMTP channel's tests use it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from devstack.errors import DevstackError

RECEIVED_FILE = "received.jsonl"
MESSAGES_DIR = "messages"


def _structure(part: Message) -> str:
    """``multipart/alternative (text/plain, text/html)``: a part's type and, for a multipart, its parts'."""
    if not part.is_multipart():
        return part.get_content_type()
    children = [child for child in part.get_payload() if isinstance(child, Message)]
    return f"{part.get_content_type()} ({', '.join(_structure(child) for child in children)})"


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    assert isinstance(part, EmailMessage)
    return str(part.get_content()).replace("\r\n", "\n")  # as written, not as SMTP carries it


def summary(raw: bytes, envelope_from: str, envelope_to: list[str]) -> dict[str, Any]:
    """One received message as a line of ``received.jsonl`` (without its number and file)."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "envelope_from": envelope_from,
            "envelope_to": envelope_to, "from": str(message.get("From", "")), "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", "")), "message_id": str(message.get("Message-ID", "")),
            "list_unsubscribe": str(message.get("List-Unsubscribe", "")), "structure": _structure(message),
            "text": _body(message, "plain"), "html": _body(message, "html")}


class _Keeper:
    """aiosmtpd's handler: writes each message to the folder, then tells ``on_message``."""

    def __init__(self, folder: Path, on_message: Callable[[dict[str, Any]], None] | None) -> None:
        self._folder = folder
        self._on_message = on_message
        (folder / MESSAGES_DIR).mkdir(parents=True, exist_ok=True)
        self._count = len(list((folder / MESSAGES_DIR).glob("*.eml")))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        raw = bytes(envelope.original_content or envelope.content)
        self._count += 1
        eml = self._folder / MESSAGES_DIR / f"{self._count}.eml"
        eml.write_bytes(raw)
        record = {"number": self._count, **summary(raw, str(envelope.mail_from), list(envelope.rcpt_tos)),
                  "file": str(eml)}
        with (self._folder / RECEIVED_FILE).open("a") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self._on_message is not None:
            self._on_message(record)
        return "250 OK kept"


async def serve(folder: Path, port: int, stop: asyncio.Event, *, host: str = "127.0.0.1",
                on_message: Callable[[dict[str, Any]], None] | None = None,
                on_ready: Callable[[], None] | None = None) -> None:
    """Serves SMTP on ``host:port`` until ``stop`` is set, keeping every message in ``folder``."""
    try:
        from aiosmtpd.smtp import SMTP
    except ImportError as exc:
        raise DevstackError("the local SMTP server needs aiosmtpd, which `make run` installs into .venv "
                            "(requirements-dev.lock)") from exc
    folder.mkdir(parents=True, exist_ok=True)
    keeper = _Keeper(folder, on_message)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(keeper, hostname="eventflow-dev-mail", enable_SMTPUTF8=True),
                                      host=host, port=port)
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        server.close()
        # Python 3.12+ waits for open connections here too; a client left connected cannot hold the exit.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)


def received(folder: Path) -> list[dict[str, Any]]:
    """The messages the folder's server kept so far, oldest first."""
    path = folder / RECEIVED_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_messages(folder: Path, expect: int, timeout_seconds: float) -> list[dict[str, Any]]:
    """The messages kept, once there are ``expect`` of them or ``timeout_seconds`` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while len(found := received(folder)) < expect and time.monotonic() < deadline:
        time.sleep(0.25)
    return found
