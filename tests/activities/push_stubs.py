"""Local servers that speak Web Push (a push service) and FCM HTTP v1 with its OAuth token endpoint.

The Web Push stub plays the browser too: it makes subscriptions (a P-256 key pair and an auth
secret per browser), checks each request's VAPID token (ES256 JWT, audience its own origin, signed
by the expected application server key) and decrypts the aes128gcm payload with the browser's
private key. The FCM stub checks the JWT assertion of the service account at its token URI
(RS256, audience the token URI, the FCM scope) and then the bearer on every send. Both count what
they accepted per device, and answer 410 / ``UNREGISTERED`` for devices marked gone.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from activities.push_fcm import SCOPE


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vapid_key_pem() -> tuple[bytes, bytes]:
    """A fresh VAPID key: (private PEM, public key as the uncompressed point browsers subscribe with)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return pem, public


@dataclass
class Browser:
    """One subscription as a browser holds it."""

    sub_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str

    def subscription(self) -> str:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)
        return json.dumps({"endpoint": self.endpoint, "keys": {"p256dh": _b64(public), "auth": _b64(self.auth)}})


@dataclass
class PushStub:
    """The push service, the FCM API and the Google token endpoint on one local port."""

    vapid_public_key: bytes = b""
    base_url: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    #: Decrypted Web Push payloads by subscription id, in arrival order.
    webpush: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: FCM messages by registration token.
    fcm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    refusals: list[str] = field(default_factory=list)
    tokens_issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    #: Devices (subscription ids or FCM tokens) answered 503 once, then served.
    unavailable_once: set[str] = field(default_factory=set)
    account_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    client_email: str = "eventflow-test@example-project.iam.gserviceaccount.com"

    def browser(self) -> Browser:
        sub_id = uuid.uuid4().hex
        made = Browser(sub_id, ec.generate_private_key(ec.SECP256R1()), os.urandom(16),
                       f"{self.base_url}/wp/{sub_id}")
        self.browsers[sub_id] = made
        return made

    def service_account(self) -> dict[str, str]:
        pem = self.account_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": "example-project", "private_key_id": "k1",
                "private_key": pem, "client_email": self.client_email, "token_uri": f"{self.base_url}/token"}

    # -- Web Push ------------------------------------------------------------------------------

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
            self.refusals.append(problem)
            return web.Response(status=403, text=problem)
        if request.headers.get("Content-Encoding") != "aes128gcm" or not request.headers.get("TTL"):
            self.refusals.append("encoding or TTL")
            return web.Response(status=400)
        plaintext = http_ece.decrypt(await request.read(), private_key=browser.private_key,
                                     auth_secret=browser.auth, version="aes128gcm")
        self.webpush.setdefault(sub_id, []).append(json.loads(plaintext))
        return web.Response(status=201, headers={"Location": f"{self.base_url}/messages/{uuid.uuid4().hex}"})

    def _vapid_problem(self, header: str) -> str:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "no vapid authorization"
        parts = dict(item.split("=", 1) for item in params.split(",") if "=" in item)
        if _unb64(parts.get("k", "")) != self.vapid_public_key:
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

    # -- FCM -----------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(str(form.get("assertion", "")), self.account_key.public_key(), algorithms=["RS256"],
                                audience=f"{self.base_url}/token", options={"require": ["exp", "iat", "iss"]})
        except jwt.PyJWTError as exc:
            self.refusals.append(f"assertion refused: {type(exc).__name__}")
            return web.json_response({"error": "invalid_grant"}, status=400)
        if claims.get("iss") != self.client_email or claims.get("scope") != SCOPE:
            self.refusals.append("assertion issuer or scope")
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = f"ya29.{uuid.uuid4().hex}"
        self.tokens_issued.append(token)
        return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens_issued or bearer in self.revoked:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        message = (await request.json())["message"]
        token = message.get("token", "")
        if token in self.gone:
            return web.json_response({"error": {"code": 404, "message": "Requested entity was not found.",
                                                "status": "NOT_FOUND", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}},
                status=404)
        if token in self.unavailable_once:
            self.unavailable_once.discard(token)
            return web.json_response({"error": {"code": 503, "status": "UNAVAILABLE"}}, status=503)
        self.fcm.setdefault(token, []).append(message)
        project = request.match_info["project"]
        return web.json_response({"name": f"projects/{project}/messages/{uuid.uuid4().hex}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/wp/{sub}", self._webpush)
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app


@pytest.fixture
async def push_stub() -> AsyncIterator[PushStub]:
    stub = PushStub()
    runner = web.AppRunner(stub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.base_url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()
