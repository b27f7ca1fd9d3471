"""Signed, expiring links to a customer's preference page and to one-click unsubscribe.

A token is ``<payload>.<key id>.<digest>``: the payload is base64url JSON naming its purpose, the
customer, an expiry (epoch seconds) and, per purpose, a nonce or a channel and topic; the digest
is HMAC-SHA256 over a domain tag and the payload with the key the token names (`core.signing`), so
keys rotate as the catalog signing keys do: add the new key everywhere, make it the signing key,
keep the old one for as long as links signed with it should work (docs/architecture.md,
"Subscription topics, consent and preference links").

A token is checked wholly (format, key, digest, purpose, expiry) before anything is looked up, and
every refusal is the same whether or not the customer exists, so a token reveals nothing about
who is a customer. The customer id travels readable in the payload: it is an opaque id, never an
address or a name, and the only person the link goes to is that customer.

Purposes:

* ``page``: opens the preference page (in every message as ``{{ preferences_url }}``);
* ``form``: the page's form, single-use (its nonce is recorded when used: a replayed form is refused);
* ``unsubscribe``: the ``List-Unsubscribe`` one-click URL of one email, naming its channel and topic
  (``""``: the channel as a whole); it may be posted any number of times, with the same effect.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import EventflowError
from core.signing import SCHEME, SigningKeys

#: Signed together with the payload, so a token of this scheme verifies as nothing else.
_DOMAIN = b"eventflow-preferences/v1\x00"
#: Longest token accepted (a payload names one id, a channel and a topic).
MAX_TOKEN_CHARS = 2048
_VERSION = 1


class LinkPurpose(StrEnum):
    """What a token opens."""

    PAGE = "page"
    FORM = "form"
    UNSUBSCRIBE = "unsubscribe"


class TokenProblem(StrEnum):
    """Why a token was refused: a bounded label for metrics and logs (the page says less)."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_PURPOSE = "wrong_purpose"
    EXPIRED = "expired"
    REPLAYED = "replayed"


class TokenRefused(EventflowError):
    """A preference token was refused; ``problem`` says why (never the token, never the customer)."""

    def __init__(self, problem: TokenProblem) -> None:
        super().__init__(f"preference link refused: {problem.value}")
        self.problem = problem


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token says.

    Attributes:
        purpose: see `LinkPurpose`.
        customer_id: whose preferences.
        expires_at: epoch seconds after which the token is refused.
        nonce: a ``form`` token's single-use id (``""`` for the others).
        channel, topic: an ``unsubscribe`` token's channel and topic (topic ``""``: the whole channel).
    """

    purpose: LinkPurpose
    customer_id: str
    expires_at: int
    nonce: str = ""
    channel: str = ""
    topic: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PreferenceLinks:
    """Makes and checks preference tokens with one set of `SigningKeys`."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    def issue(self, claims: LinkClaims) -> str:
        """A token carrying ``claims``, signed with the signing key."""
        body: dict[str, Any] = {"v": _VERSION, "p": claims.purpose.value, "c": claims.customer_id,
                                "x": int(claims.expires_at)}
        if claims.nonce:
            body["n"] = claims.nonce
        if claims.purpose is LinkPurpose.UNSUBSCRIBE:
            body["ch"], body["t"] = claims.channel, claims.topic
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        _, key_id, digest = self._keys.sign(_DOMAIN + payload.encode()).split(":", 2)
        return f"{payload}.{key_id}.{digest}"

    def page(self, customer_id: str, expires_at: float) -> str:
        return self.issue(LinkClaims(LinkPurpose.PAGE, customer_id, int(expires_at)))

    def form(self, customer_id: str, expires_at: float) -> str:
        return self.issue(LinkClaims(LinkPurpose.FORM, customer_id, int(expires_at), nonce=secrets.token_urlsafe(16)))

    def unsubscribe(self, customer_id: str, channel: str, topic: str, expires_at: float) -> str:
        return self.issue(LinkClaims(LinkPurpose.UNSUBSCRIBE, customer_id, int(expires_at), channel=channel,
                                     topic=topic))

    def verify(self, token: str, purpose: LinkPurpose, now: float) -> LinkClaims:
        """The claims of a token made for ``purpose`` and not expired at ``now``.

        Raises:
            TokenRefused: malformed, signed with an unknown key, tampered with, made for another
                purpose, or expired (checked in that order; nothing is looked up).
        """
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 2:
            raise TokenRefused(TokenProblem.MALFORMED)
        payload, key_id, digest = token.split(".")
        if key_id not in self._keys.keys:
            raise TokenRefused(TokenProblem.UNKNOWN_KEY)
        if self._keys.verify(_DOMAIN + payload.encode(), f"{SCHEME}:{key_id}:{digest}") is not None:
            raise TokenRefused(TokenProblem.BAD_SIGNATURE)
        try:
            body = json.loads(_unb64(payload))
            claims = LinkClaims(LinkPurpose(body["p"]), str(body["c"]), int(body["x"]), nonce=str(body.get("n", "")),
                                channel=str(body.get("ch", "")), topic=str(body.get("t", "")))
        except (binascii.Error, ValueError, KeyError, TypeError):
            # Signed by us yet unreadable: a token of a newer format; refused, never guessed at.
            raise TokenRefused(TokenProblem.MALFORMED) from None
        if body.get("v") != _VERSION or not claims.customer_id:
            raise TokenRefused(TokenProblem.MALFORMED)
        if claims.purpose is not purpose:
            raise TokenRefused(TokenProblem.WRONG_PURPOSE)
        if now >= claims.expires_at:
            raise TokenRefused(TokenProblem.EXPIRED)
        return claims


__all__ = ["LinkClaims", "LinkPurpose", "MAX_TOKEN_CHARS", "PreferenceLinks", "TokenProblem", "TokenRefused"]
