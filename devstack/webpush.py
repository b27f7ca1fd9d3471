"""A local Web Push service (RFC 8030) that plays the browsers too: the tests' stub and the dev stack's.

It makes subscriptions as a browser would (a P-256 key pair and a 16-byte auth secret each, an
endpoint on this service), and on every push checks what a real push service checks before it
takes a message: the VAPID authorization (RFC 8292: an ES256 JWT whose audience is this service's
origin, signed by the application server key ``k`` the subscription was made with, with a
``mailto:`` or ``https:`` contact), the ``aes128gcm`` content encoding and a TTL. It then decrypts
the payload (RFC 8291) with the subscription's private key, which only the browser would hold, and
keeps it. Unknown or gone subscriptions are answered 410, refused VAPID tokens 403.

`PushService` is the service in memory, on any aiohttp application; the tests drive it
(``tests/activities/push_stubs.py`` adds FCM beside it). `serve` runs it for development
(``eventflow dev push-service``) on a folder that keeps its state across restarts: a VAPID key
for the worker (generated there, for development only), the browsers' keys, a device API request
body per browser, and every push it took, decrypted, one JSON line each (`received`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: The path of a subscription's endpoint on the service.
ENDPOINT_PATH = "/wp/{sub}"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def vapid_key_pem() -> tuple[bytes, bytes]:
    """A fresh VAPID key: (private PEM, public key as the uncompressed point browsers subscribe with)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _pem(key), _public_point(key)


def vapid_public_key(private_pem: bytes) -> bytes:
    """The uncompressed public point of a VAPID private key (PEM): the ``applicationServerKey`` of a subscribe."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a VAPID key is a P-256 (prime256v1) EC key")
    return _public_point(key)


@dataclass
class Browser:
    """One subscription as a browser holds it: its private key and auth secret never leave it."""

    sub_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str
    #: A name for people (``browser-1``); the sub id otherwise.
    name: str = ""

    def subscription_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()``: what the browser hands the site."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64url(_public_point(self.private_key)),
                                                    "auth": b64url(self.auth)}}

    def subscription(self) -> str:
        return json.dumps(self.subscription_json())

    def to_record(self) -> dict[str, str]:
        """Everything needed to be this browser again (the private key included: keep it private)."""
        return {"name": self.name, "sub_id": self.sub_id, "private_key": _pem(self.private_key).decode(),
                "auth": b64url(self.auth)}

    @classmethod
    def from_record(cls, record: dict[str, str], base_url: str) -> Browser:
        key = serialization.load_pem_private_key(record["private_key"].encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(record["sub_id"], key, unb64url(record["auth"]), endpoint_of(base_url, record["sub_id"]),
                   record.get("name", ""))


def endpoint_of(base_url: str, sub_id: str) -> str:
    return base_url + ENDPOINT_PATH.format(sub=sub_id)


@dataclass(frozen=True)
class Push:
    """One push the service took: whose, its headers' promises and the decrypted payload."""

    browser: Browser
    ttl: int
    urgency: str
    payload: dict[str, Any]


@dataclass
class PushService:
    """The push service, in memory; `add_routes` puts it on an aiohttp application.

    Attributes:
        vapid_public_key: the application server key subscriptions were made with; pushes signed
            by another key are refused (403).
        base_url: this service's origin (``http://127.0.0.1:PORT``): endpoints and the VAPID audience.
        webpush: decrypted payloads by subscription id, in arrival order.
        gone: subscription ids answered 410, as for a browser that unsubscribed.
        unavailable_once: subscription ids answered 503 once, then served.
        refusals: why requests were refused, in order.
        on_push: called with each push taken; on_refusal with each refusal's reason.
    """

    vapid_public_key: bytes = b""
    base_url: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    webpush: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)
    unavailable_once: set[str] = field(default_factory=set)
    on_push: Callable[[Push], None] | None = None
    on_refusal: Callable[[str], None] | None = None

    def browser(self, name: str = "") -> Browser:
        """A new subscription on this service, as a browser's ``pushManager.subscribe`` makes one."""
        sub_id = uuid.uuid4().hex
        made = Browser(sub_id, ec.generate_private_key(ec.SECP256R1()), os.urandom(16),
                       endpoint_of(self.base_url, sub_id), name)
        self.browsers[sub_id] = made
        return made

    def _refuse(self, reason: str) -> None:
        self.refusals.append(reason)
        if self.on_refusal is not None:
            self.on_refusal(reason)

    async def _webpush(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["sub"]
        browser = self.browsers.get(sub_id)
        if browser is None or sub_id in self.gone:
            return web.Response(status=410)
        if sub_id in self.unavailable_once:
            self.unavailable_once.discard(sub_id)
            return web.Response(status=503)
        problem = self._vapid_problem(request.headers.get("Authorization", ""))
        if problem:
            self._refuse(problem)
            return web.Response(status=403, text=problem)
        ttl = request.headers.get("TTL", "")
        if request.headers.get("Content-Encoding") != "aes128gcm" or not ttl.isdigit():
            self._refuse("encoding or TTL")
            return web.Response(status=400)
        try:
            plaintext = http_ece.decrypt(await request.read(), private_key=browser.private_key,
                                         auth_secret=browser.auth, version="aes128gcm")
            payload = json.loads(plaintext)
        except Exception as exc:  # noqa: BLE001 - http_ece raises bare errors for a payload it cannot open
            self._refuse(f"payload not decryptable with the subscription's keys: {type(exc).__name__}")
            return web.Response(status=400)
        self.webpush.setdefault(sub_id, []).append(payload)
        if self.on_push is not None:
            self.on_push(Push(browser, int(ttl), request.headers.get("Urgency", "normal"), payload))
        return web.Response(status=201, headers={"Location": f"{self.base_url}/messages/{uuid.uuid4().hex}"})

    def _vapid_problem(self, header: str) -> str:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "no vapid authorization"
        parts = dict(item.strip().split("=", 1) for item in params.split(",") if "=" in item)
        if unb64url(parts.get("k", "")) != self.vapid_public_key:
            return "unknown application server key"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.vapid_public_key)
        try:
            claims = jwt.decode(parts.get("t", ""), public, algorithms=["ES256"], audience=self.base_url,
                                options={"require": ["exp", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            return f"vapid token refused: {type(exc).__name__}"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "vapid sub is no contact"
        return ""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(ENDPOINT_PATH, self._webpush)

    def app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app


# -- the development service on a folder --------------------------------------------------------

#: The dev VAPID key the worker signs with (EVENTFLOW_VAPID_PRIVATE_KEY_FILE); made here, for development only.
VAPID_KEY_FILE = "vapid-private.pem"
#: The browsers' private keys and auth secrets: what lets this service decrypt their pushes.
BROWSERS_FILE = "browsers.json"
#: Every push taken, decrypted, one JSON object a line.
RECEIVED_FILE = "received.jsonl"
#: Every request refused (VAPID, encoding), with its reason.
REFUSED_FILE = "refused.jsonl"
#: Browsers a fresh folder gets.
DEV_BROWSERS = 2


@dataclass(frozen=True)
class DevPushFolder:
    """What `prepare` left in a folder for the worker and for registering the browsers."""

    path: Path
    base_url: str
    vapid_key_file: Path
    #: The VAPID public key as a site's ``pushManager.subscribe({applicationServerKey})`` takes it.
    application_server_key: str
    #: One device API request body (``POST /customers/{id}/devices``) per browser.
    device_files: tuple[Path, ...]


def _write_private(path: Path, data: bytes) -> None:
    """``data`` in a file only its owner may read (a fresh file, replaced whole)."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    partial.replace(path)


def prepare(folder: Path, base_url: str, *, browsers: int = DEV_BROWSERS) -> DevPushFolder:
    """The folder's VAPID key and browsers, made where missing (kept where present), endpoints on ``base_url``.

    Idempotent: a second call changes nothing but the endpoints' origin, so browsers registered
    before stay decryptable.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / VAPID_KEY_FILE
    if not key_file.exists():
        _write_private(key_file, vapid_key_pem()[0])
    public = vapid_public_key(key_file.read_bytes())
    known = [Browser.from_record(record, base_url) for record in _browser_records(folder)]
    while len(known) < browsers:
        known.append(Browser(uuid.uuid4().hex, ec.generate_private_key(ec.SECP256R1()), os.urandom(16), "",
                             f"browser-{len(known) + 1}"))
    known = [Browser(b.sub_id, b.private_key, b.auth, endpoint_of(base_url, b.sub_id), b.name) for b in known]
    _write_private(folder / BROWSERS_FILE, json.dumps([b.to_record() for b in known], indent=2).encode())
    device_files = []
    for browser in known:
        path = folder / f"{browser.name}.json"
        path.write_text(json.dumps({"channel": "webpush", "subscription": browser.subscription_json()}) + "\n")
        device_files.append(path)
    return DevPushFolder(folder, base_url, key_file, b64url(public), tuple(device_files))


def _browser_records(folder: Path) -> list[dict[str, str]]:
    path = folder / BROWSERS_FILE
    return list(json.loads(path.read_text())) if path.exists() else []


def dev_service(folder: Path, base_url: str) -> PushService:
    """The service of a prepared folder: its VAPID public key and browsers, recording to the folder."""
    public = vapid_public_key((folder / VAPID_KEY_FILE).read_bytes())
    service = PushService(vapid_public_key=public, base_url=base_url)
    for record in _browser_records(folder):
        browser = Browser.from_record(record, base_url)
        service.browsers[browser.sub_id] = browser
    return service


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def push_record(push: Push) -> dict[str, Any]:
    """A push as a line of ``received.jsonl``."""
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "browser": push.browser.name or push.browser.sub_id,
            "endpoint": push.browser.endpoint, "ttl": push.ttl, "urgency": push.urgency, "payload": push.payload}


async def serve(folder: Path, port: int, stop: asyncio.Event, *, host: str = "127.0.0.1",
                on_push: Callable[[dict[str, Any]], None] | None = None,
                on_refusal: Callable[[str], None] | None = None,
                on_ready: Callable[[DevPushFolder], None] | None = None) -> None:
    """Serves the folder's push service on ``host:port`` until ``stop`` is set (preparing the folder first)."""
    base_url = f"http://{host}:{port}"
    prepared = prepare(folder, base_url)
    service = dev_service(folder, base_url)

    def took(push: Push) -> None:
        record = push_record(push)
        _append(folder / RECEIVED_FILE, record)
        if on_push is not None:
            on_push(record)

    def refused(reason: str) -> None:
        _append(folder / REFUSED_FILE, {"at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason})
        if on_refusal is not None:
            on_refusal(reason)

    service.on_push, service.on_refusal = took, refused
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if on_ready is not None:
            on_ready(prepared)
        await stop.wait()
    finally:
        await runner.cleanup()


def received(folder: Path) -> list[dict[str, Any]]:
    """The pushes the folder's service took so far, oldest first."""
    return _read_lines(folder / RECEIVED_FILE)


def refusals(folder: Path) -> list[dict[str, Any]]:
    return _read_lines(folder / REFUSED_FILE)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_pushes(folder: Path, expect: int, timeout_seconds: float) -> list[dict[str, Any]]:
    """The pushes received, once there are ``expect`` of them or ``timeout_seconds`` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while len(found := received(folder)) < expect and time.monotonic() < deadline:
        time.sleep(0.25)
    return found
