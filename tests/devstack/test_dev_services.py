"""The dev stack's push service and SMTP server (``eventflow dev push-service | mail-server``) against the real channels.

README.md's walk-throughs run them as processes (tests/test_docs_runnable.py); here they run in this
loop, so what they keep and refuse can be checked one by one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from activities.channels import OutgoingMessage
from activities.email_smtp import SmtpChannel, SmtpConfig, SmtpSecurity
from activities.errors import ProviderAuthError
from activities.push_webpush import WebPushChannel, WebPushConfig
from devstack import mail, webpush
from eventflow.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def _serving(serve: Callable[[asyncio.Event, Callable[..., None]], Coroutine[Any, Any, None]]
                   ) -> AsyncIterator[None]:
    """Runs ``serve(stop, on_ready)`` in this loop until the block ends; the block starts once it listens."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(stop, lambda *_: ready.set()))
    await asyncio.wait_for(asyncio.wait([task, asyncio.create_task(ready.wait())],
                                        return_when=asyncio.FIRST_COMPLETED), 10)
    assert ready.is_set(), task.exception() if task.done() else "not listening"
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _message(to: str, **fields: str) -> OutgoingMessage:
    return OutgoingMessage(idempotency_key="journey:post_purchase:c1:o1/thank_you", channel="webpush", to=to,
                           **fields)  # type: ignore[arg-type]


def test_a_folder_keeps_its_keys_and_browsers_and_follows_the_port(tmp_path: Path) -> None:
    first = webpush.prepare(tmp_path, "http://127.0.0.1:8095")
    key, browsers = first.vapid_key_file.read_bytes(), json.loads((tmp_path / webpush.BROWSERS_FILE).read_text())
    again = webpush.prepare(tmp_path, "http://127.0.0.1:9000")

    assert again.vapid_key_file.read_bytes() == key
    assert json.loads((tmp_path / webpush.BROWSERS_FILE).read_text()) == browsers
    assert [path.name for path in again.device_files] == ["browser-1.json", "browser-2.json"]
    bodies = [json.loads(path.read_text()) for path in again.device_files]
    assert {body["channel"] for body in bodies} == {"webpush"}
    assert [body["subscription"]["endpoint"] for body in bodies] == [
        f"http://127.0.0.1:9000/wp/{browser['sub_id']}" for browser in browsers]
    # The private halves are for this user only.
    for private in (first.vapid_key_file, tmp_path / webpush.BROWSERS_FILE):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


async def test_pushes_signed_with_the_folders_key_arrive_decrypted_and_others_are_refused(tmp_path: Path) -> None:
    port = _free_port()
    refused: list[str] = []
    async with _serving(lambda stop, ready: webpush.serve(tmp_path, port, stop, on_refusal=refused.append,
                                                          on_ready=ready)):
        subscriptions = [json.dumps(json.loads((tmp_path / f"browser-{n}.json").read_text())["subscription"])
                         for n in (1, 2)]
        ours = WebPushChannel(WebPushConfig((tmp_path / webpush.VAPID_KEY_FILE).read_bytes(), "mailto:dev@example.com"))
        other = WebPushChannel(WebPushConfig(webpush.vapid_key_pem()[0], "mailto:dev@example.com"))
        try:
            for subscription in subscriptions:
                await ours.deliver(_message(subscription, subject="Thank you", body="Order o1 is on its way",
                                            link="https://shop.example/o1"))
            with pytest.raises(ProviderAuthError):
                await other.deliver(_message(subscriptions[0], subject="Not ours", body="x"))
        finally:
            await ours.aclose()
            await other.aclose()

    received = webpush.received(tmp_path)
    assert [(r["browser"], r["payload"]["title"], r["payload"]["body"], r["payload"]["link"]) for r in received] == [
        ("browser-1", "Thank you", "Order o1 is on its way", "https://shop.example/o1"),
        ("browser-2", "Thank you", "Order o1 is on its way", "https://shop.example/o1")]
    assert refused == ["unknown application server key"]
    assert [r["reason"] for r in webpush.refusals(tmp_path)] == refused


async def test_the_mail_server_keeps_a_multipart_message_whole_and_summarised(tmp_path: Path) -> None:
    port = _free_port()
    async with _serving(lambda stop, ready: mail.serve(tmp_path, port, stop, on_ready=ready)):
        channel = SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, from_email="shop@example.com",
                                         from_name="Example Shop", security=SmtpSecurity.NONE, timeout_seconds=5))
        await channel.deliver(OutgoingMessage(
            idempotency_key="journey:post_purchase:c1:o1/thank_you", channel="email", to="mia@example.com",
            subject="Thank you", body="Hi Mia,\nthanks.", html='<p style="color: #222222">Hi Mia,</p>'))

    [kept] = mail.received(tmp_path)
    assert (kept["from"], kept["to"], kept["subject"]) == ("Example Shop <shop@example.com>", "mia@example.com",
                                                           "Thank you")
    assert kept["structure"] == "multipart/alternative (text/plain, text/html)"
    assert (kept["text"], kept["html"]) == ("Hi Mia,\nthanks.\n", '<p style="color: #222222">Hi Mia,</p>\n')
    assert kept["message_id"].startswith("<") and Path(kept["file"]).read_bytes().startswith(b"From: ")


def test_show_waits_for_what_it_expects_and_says_when_it_did_not_come(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "push-service", "show", str(tmp_path), "--expect", "1", "--timeout", "0.3"]) == 1
    assert "expected 1 within 0.3 s" in capsys.readouterr().err
    assert main(["dev", "mail-server", "show", str(tmp_path)]) == 0
    assert "0 message(s)" in capsys.readouterr().out
