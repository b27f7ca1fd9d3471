"""A local HTTP server that speaks the parts of SendGrid's and Twilio's REST APIs the channels use.

Replies are scripted per test (status, JSON body, headers); unscripted requests succeed the way the
real provider answers. Every request is recorded with its headers and parsed body, so tests assert
what arrived. ``hold()`` makes the next sends wait (after the message is accepted) until released,
to kill a worker mid-send.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """A scripted response."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: dict[str, str]
    at: float
    #: The client's address and port: requests on one kept-alive connection share it.
    peer: tuple[str, int] | None = None


class ProviderStub:
    """SendGrid ``POST /v3/mail/send`` and Twilio ``/2010-04-01/Accounts/{sid}/Messages.json`` (POST, GET)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.messages: list[dict[str, Any]] = []
        self._hold: asyncio.Event | None = None
        self._hold_refusals = False
        self.held = asyncio.Event()
        #: Requests waiting in `hold` right now, and a condition notified when one arrives.
        self.holding = 0
        self._holding_changed = asyncio.Condition()
        #: SendGrid answers as sent, (idempotency key, HTTP status), so tests count what was accepted.
        self.answers: list[tuple[str, int]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def reply(self, *replies: Reply) -> None:
        """Queues replies for the next send requests, in order."""
        self.script.extend(replies)

    def hold(self, *, refusals: bool = False) -> None:
        """Makes sends wait, after being accepted (and, with ``refusals``, scripted refusals too), until `release`."""
        self._hold = asyncio.Event()
        self._hold_refusals = refusals
        self.held.clear()

    async def until_holding(self, count: int) -> None:
        """Returns once ``count`` requests wait in `hold` at the same time."""
        async with self._holding_changed:
            await self._holding_changed.wait_for(lambda: self.holding >= count)

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()
            self._hold = None

    def sends(self) -> list[Recorded]:
        """The send requests (POSTs), oldest first."""
        return [r for r in self.requests if r.method == "POST"]

    def accepted_by_key(self) -> dict[str, int]:
        """SendGrid sends answered 2xx (the provider took the message) per idempotency key."""
        counts: dict[str, int] = {}
        for key, status in self.answers:
            if status < 300:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def sends_by_key(self) -> dict[str, int]:
        """SendGrid send requests per idempotency key (its ``custom_args``)."""
        counts: dict[str, int] = {}
        for sent in self.sends():
            key = str((sent.body.get("custom_args") or {}).get("idempotency_key", ""))
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v3/mail/send", self._sendgrid)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio_create)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio_list)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        if request.content_type == "application/json":
            body = json.loads(raw or b"{}")
        else:
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        recorded = Recorded(request.method, request.path, dict(request.headers), body,
                            {k: v for k, v in request.query.items()}, time.monotonic(),
                            _peer(request.transport.get_extra_info("peername") if request.transport else None))
        self.requests.append(recorded)
        return recorded

    async def _scripted(self) -> web.Response | None:
        if not self.script:
            return None
        reply = self.script.popleft()
        if reply.status < 300:
            return None
        return web.json_response(reply.body or {}, status=reply.status, headers=reply.headers)

    async def _wait_if_held(self) -> None:
        hold = self._hold
        if hold is not None:
            self.held.set()
            async with self._holding_changed:
                self.holding += 1
                self._holding_changed.notify_all()
            try:
                await hold.wait()
            finally:
                self.holding -= 1

    async def _sendgrid(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        key = str((recorded.body.get("custom_args") or {}).get("idempotency_key", ""))
        failure = await self._scripted()
        if failure is not None:
            self.answers.append((key, failure.status))
            if self._hold_refusals:
                await self._wait_if_held()
            return failure
        self.answers.append((key, 202))
        await self._wait_if_held()
        return web.Response(status=202, headers={"X-Message-Id": f"sg-{uuid.uuid4().hex[:12]}"})

    async def _twilio_create(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        failure = await self._scripted()
        if failure is not None:
            return failure
        message = {
            "sid": f"SM{uuid.uuid4().hex}",
            "account_sid": request.match_info["sid"],
            "to": recorded.body.get("To"),
            "from": recorded.body.get("From"),
            "body": recorded.body.get("Body", ""),
            "status": "queued",
            "date_created": format_datetime(datetime.now(UTC)),
            "date_sent": None,
        }
        self.messages.append(message)
        await self._wait_if_held()
        return web.json_response(message, status=201)

    async def _twilio_list(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        to = request.query.get("To")
        found = [m for m in self.messages if to is None or m["to"] == to]
        return web.json_response({"messages": found, "uri": request.path, "page": 0, "page_size": 50,
                                  "first_page_uri": request.path, "next_page_uri": None,
                                  "previous_page_uri": None, "start": 0, "end": len(found)})


def invalid_number(code: int = 21211) -> Reply:
    """Twilio's answer to a bad ``To``."""
    return Reply(400, {"code": code, "message": "The 'To' number is not a valid phone number.",
                       "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": 400})


def unsubscribed() -> Reply:
    """Twilio's answer when the recipient replied STOP."""
    return Reply(400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                       "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400})


def server_error() -> Reply:
    return Reply(500, {"code": 20500, "message": "Internal Server Error", "status": 500})


def rate_limited(retry_after_seconds: int) -> Reply:
    return Reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429},
                 {"Retry-After": str(retry_after_seconds)})


@pytest.fixture
async def provider() -> AsyncIterator[ProviderStub]:
    """A provider stub on a random local port, for one test."""
    stub = ProviderStub()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


def _peer(address: Any) -> tuple[str, int] | None:
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) else None
