"""Local servers that speak Web Push (a push service) and FCM HTTP v1 with its OAuth token endpoint.

The Web Push side is the dev stack's push service (`devstack.webpush.PushService`, also behind
``eventflow dev push-service``): it plays the browser too, checks each request's VAPID token and
decrypts the aes128gcm payload with the browser's private key. The FCM stub here checks the JWT
assertion of the service account at its token URI (RS256, audience the token URI, the FCM scope)
and then the bearer on every send. Both count what they accepted per device, and answer 410 /
``UNREGISTERED`` for devices marked gone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from activities.push_fcm import SCOPE
from devstack.webpush import Browser, PushService, vapid_key_pem

__all__ = ["Browser", "PushStub", "push_stub", "vapid_key_pem"]


@dataclass
class PushStub(PushService):
    """The push service, the FCM API and the Google token endpoint on one local port."""

    #: FCM messages by registration token.
    fcm: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens_issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    account_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    client_email: str = "eventflow-test@example-project.iam.gserviceaccount.com"

    def service_account(self) -> dict[str, str]:
        pem = self.account_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": "example-project", "private_key_id": "k1",
                "private_key": pem, "client_email": self.client_email, "token_uri": f"{self.base_url}/token"}

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
        self.add_routes(app)
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
