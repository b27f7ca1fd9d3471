"""Requests signed the way the providers sign them: an ECDSA P-256 key pair made here for SendGrid, and
Twilio's own `RequestValidator` for the expected ``X-Twilio-Signature``."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from eventflow.webhooks.verify import SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER, TWILIO_SIGNATURE_HEADER

TWILIO_TOKEN = "tw-secret"


@dataclass
class SendGridSigner:
    """A fresh key pair; `verification_key` is what SendGrid's Mail Settings would show."""

    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def verification_key(self) -> str:
        der = self.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {SENDGRID_SIGNATURE_HEADER: base64.b64encode(signature).decode(), SENDGRID_TIMESTAMP_HEADER: stamp,
                "Content-Type": "application/json"}


def sendgrid_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps(list(events)).encode()


def sendgrid_event(kind: str, custom_args: Mapping[str, str], *, event_id: str, email: str = "ada@example.com",
                   **extra: Any) -> dict[str, Any]:
    """One Event Webhook event about a send whose ``custom_args`` SendGrid echoes back."""
    return {"email": email, "timestamp": int(time.time()), "event": kind, "sg_event_id": event_id,
            "sg_message_id": "sgmsg123.filter0001.1.0", **custom_args, **extra}


def twilio_headers(url: str, params: Mapping[str, str], token: str = TWILIO_TOKEN) -> dict[str, str]:
    signature = RequestValidator(token).compute_signature(url, dict(params))
    return {TWILIO_SIGNATURE_HEADER: signature, "Content-Type": "application/x-www-form-urlencoded"}


def form(params: Mapping[str, str]) -> bytes:
    return urlencode(dict(params)).encode()
