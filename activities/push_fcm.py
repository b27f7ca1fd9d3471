"""App push through Firebase Cloud Messaging HTTP v1 (Android, and iOS through FCM's APNs relay).

Authentication is a Google service account's OAuth 2.0 JWT bearer grant (RFC 7523): a JWT
assertion signed RS256 with the account's private key, exchanged at its ``token_uri`` for an access
token, kept until shortly before it expires. A 401 from FCM drops the token and fails the call as
retryable, not uncertain (a 401 means FCM took nothing), so the next attempt mints a fresh one. ``messages:send`` answers the message's
``name``; ``UNREGISTERED`` (404) means the app was uninstalled or the token expired
(`DeviceGoneError`, the device is removed). FCM cannot say whether an earlier attempt's message
arrived (``reconciles`` is false).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from activities.channels import OutgoingMessage
from activities.errors import (
    DeviceGoneError,
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RateLimitedError,
    RetryableSendError,
    SendError,
    parse_retry_after,
)
from activities.notifications import SendResult
from activities.outcomes import SendStatus
from activities.ratelimit import TokenBucket
from core.errors import EventflowError

PROVIDER = "fcm"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: A token is renewed this long before Google's stated expiry (clock skew, a long call).
_EARLY_RENEWAL_SECONDS = 300
_ASSERTION_LIFETIME_SECONDS = 3600


class ServiceAccountError(EventflowError):
    """The service account file is unreadable or lacks a field; the message names the field, never the key."""


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a Google service account key file that the JWT bearer grant needs."""

    project_id: str
    client_email: str
    private_key: str
    token_uri: str
    private_key_id: str = ""

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        """Reads a service account JSON key file; raises `ServiceAccountError`."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ServiceAccountError(f"{path}: not a readable JSON key file ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise ServiceAccountError(f"{path}: not a service account key file")
        missing = [name for name in ("project_id", "client_email", "private_key", "token_uri")
                   if not isinstance(raw.get(name), str) or not raw.get(name)]
        if missing:
            raise ServiceAccountError(f"{path}: missing {', '.join(missing)}")
        return cls(raw["project_id"], raw["client_email"], raw["private_key"], raw["token_uri"],
                   str(raw.get("private_key_id") or ""))


class AccessTokens:
    """OAuth access tokens for one service account, minted by the JWT bearer grant and cached."""

    def __init__(self, account: ServiceAccount, client: httpx.AsyncClient) -> None:
        self._account = account
        self._client = client
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def assertion(self, now: float) -> str:
        """The signed JWT (RS256) asking for the FCM scope."""
        claims = {"iss": self._account.client_email, "scope": SCOPE, "aud": self._account.token_uri,
                  "iat": int(now), "exp": int(now) + _ASSERTION_LIFETIME_SECONDS}
        headers = {"kid": self._account.private_key_id} if self._account.private_key_id else None
        return jwt.encode(claims, self._account.private_key, algorithm="RS256", headers=headers)

    async def token(self) -> str:
        """A bearer token valid for a while yet; raises `SendError` when the grant fails."""
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            try:
                response = await self._client.post(self._account.token_uri, data={
                    "grant_type": _GRANT_TYPE, "assertion": self.assertion(time.time())})
            except httpx.HTTPError as exc:
                raise RetryableSendError(f"fcm token exchange failed: {type(exc).__name__}",
                                         provider=PROVIDER) from None
            if response.status_code >= 500 or response.status_code == 429:
                raise RetryableSendError(f"fcm token exchange unavailable ({response.status_code})",
                                         provider=PROVIDER, status=response.status_code)
            if response.status_code != 200:
                raise ProviderAuthError(f"fcm token exchange refused the service account ({response.status_code})",
                                        provider=PROVIDER, status=response.status_code)
            body = response.json()
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 3600))
            self._expires_at = time.monotonic() + max(lifetime - _EARLY_RENEWAL_SECONDS, lifetime / 2)
            return self._token

    def drop(self, token: str) -> None:
        """Forgets ``token`` (FCM refused it), unless a newer one replaced it already."""
        if self._token == token:
            self._token, self._expires_at = "", 0.0


@dataclass(frozen=True)
class FcmConfig:
    """A Firebase project and the account that sends to it.

    Attributes:
        account: the service account (its ``token_uri`` is where tokens are minted).
        project_id: the Firebase project; the account's own by default.
        base_url: the FCM API (a local stub in tests).
        timeout_seconds: per-request timeout.
    """

    account: ServiceAccount
    project_id: str = ""
    base_url: str = "https://fcm.googleapis.com"
    timeout_seconds: float = 10.0


def fcm_message(message: OutgoingMessage) -> dict[str, Any]:
    """The v1 ``Message``: notification title and body; data with the deep link; per-platform hints.

    ``data`` values must be strings (FCM refuses others); the deep link travels as ``data.link``,
    which the Android and iOS apps open.
    """
    data = {**dict(message.data), **({"link": message.link} if message.link else {})}
    body: dict[str, Any] = {
        "token": message.to,
        "notification": {"title": message.subject or "", "body": message.body},
        "android": {"priority": "normal"},
        "apns": {"headers": {"apns-priority": "5"}},
    }
    if data:
        body["data"] = data
    return {"message": body}


class FcmChannel:
    """The ``push`` channel: one ``messages:send`` per app installation."""

    name = PROVIDER
    reconciles = False

    def __init__(self, config: FcmConfig, limiter: TokenBucket | None = None) -> None:
        self._config = config
        self._limiter = limiter
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)
        self._tokens = AccessTokens(config.account, self._client)
        project = config.project_id or config.account.project_id
        self._url = f"{config.base_url.rstrip('/')}/v1/projects/{project}/messages:send"

    @property
    def limiter(self) -> TokenBucket | None:
        return self._limiter

    @property
    def call_timeout_seconds(self) -> float:
        # A token exchange (about once an hour), then the send.
        return self._config.timeout_seconds * 2

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        token = await self._tokens.token()
        try:
            response = await self._client.post(self._url, json=fcm_message(message),
                                               headers={"Authorization": f"Bearer {token}"})
        except httpx.TimeoutException as exc:
            raise RetryableSendError("fcm timed out", provider=PROVIDER,
                                     delivery_uncertain=not isinstance(exc, httpx.ConnectTimeout)) from None
        except httpx.HTTPError as exc:
            raise RetryableSendError(f"fcm connection failed: {type(exc).__name__}", provider=PROVIDER) from None
        if response.status_code == 401:
            # Revoked or expired early: FCM took nothing; the next attempt mints a fresh token.
            self._tokens.drop(token)
            raise RetryableSendError("fcm refused the access token (401)", provider=PROVIDER, status=401)
        if response.status_code == 200:
            return SendResult(SendStatus.SENT, PROVIDER, str(response.json().get("name") or "") or None)
        raise _classify(response)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """FCM's ``FcmError.errorCode`` (``UNREGISTERED``...) and the canonical status, "" when absent."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "", ""
    code = ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code, str(error.get("status") or "")


def _classify(response: httpx.Response) -> SendError:
    """The v1 error codes (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode) by kind."""
    status = response.status_code
    code, canonical = _error_code(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if code == "UNREGISTERED" or status == 404:
        return DeviceGoneError("fcm token unregistered", provider=PROVIDER, status=status, provider_code=code or None)
    if code == "INVALID_ARGUMENT" or status == 400:
        # Most often a malformed token; a malformed message would fail every device alike.
        return InvalidAddressError(f"fcm refused the message or token ({code or canonical or status})",
                                   provider=PROVIDER, status=status, provider_code=code or None)
    if code in ("SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR") or status in (401, 403):
        return ProviderAuthError(f"fcm refused the credentials ({code or status})", provider=PROVIDER,
                                 status=status, provider_code=code or None)
    if code == "QUOTA_EXCEEDED" or status == 429:
        return RateLimitedError("fcm quota exceeded", provider=PROVIDER, status=status, provider_code=code or None,
                                retry_after_seconds=retry_after)
    if status >= 500:
        return RetryableSendError(f"fcm unavailable ({code or status})", provider=PROVIDER, status=status,
                                  provider_code=code or None, retry_after_seconds=retry_after)
    return PermanentSendError(f"fcm rejected the message ({status})", provider=PROVIDER, status=status,
                              provider_code=code or None)
