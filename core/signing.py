"""HMAC-SHA256 signatures with rotating keys: who may publish journey catalog entries.

A `SigningKeys` holds every key that verifies, by id, and the id of the one that signs, in the
``id=base64key`` form of the payload keys (`core.codec.Keyring`). A signature names its key
(``hmac-sha256:<key id>:<hex digest>``), so a new key can be added to every reader first, made the
signing key next, and the old one kept for as long as entries signed with it are read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.codec import KEY_ID, parse_key_items  # the payload keys' grammar, spelled once

#: Shortest key accepted: HMAC-SHA256's block of security (``openssl rand -base64 32``).
MIN_KEY_BYTES = 32
#: The scheme part of a signature; another scheme is refused, never guessed.
SCHEME = "hmac-sha256"


class SigningKeysError(ValueError):
    """The configured signing keys are unusable; the message says why (never the key material).

    Attributes:
        signing_key_id: True when the fault is the choice of signing key (missing, or not a key).
    """

    def __init__(self, problem: str, *, signing_key_id: bool = False) -> None:
        super().__init__(problem)
        self.signing_key_id = signing_key_id


@dataclass(frozen=True)
class SigningKeys:
    """The keys that verify, by id, and the id of the one that signs.

    Attributes:
        keys: key id -> raw key bytes (at least `MIN_KEY_BYTES`).
        signing_key_id: the key new signatures are made with; one of ``keys``.
    """

    keys: Mapping[str, bytes] = field(repr=False)
    signing_key_id: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise SigningKeysError("no key")
        for key_id, key in self.keys.items():
            if not KEY_ID.match(key_id):
                raise SigningKeysError(f"key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
            if len(key) < MIN_KEY_BYTES:
                raise SigningKeysError(f"key {key_id!r} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
                                       "(generate one with `openssl rand -base64 32`)")
        if self.signing_key_id not in self.keys:
            raise SigningKeysError(f"the signing key id {self.signing_key_id!r} is not among the keys "
                                   f"({', '.join(sorted(self.keys))})", signing_key_id=True)

    @classmethod
    def parse(cls, text: str, signing_key_id: str | None = None) -> SigningKeys:
        """Reads ``id=base64key`` items separated by commas or new lines (blank lines and ``#`` comments skipped).

        Args:
            signing_key_id: the signing key; may be omitted when there is exactly one key.

        Raises:
            SigningKeysError: a malformed item, bad base64, a short key, a duplicate id, or a signing
                key id that is missing or not among the keys.
        """
        keys = parse_key_items(text, SigningKeysError)
        if signing_key_id is None:
            if len(keys) > 1:
                raise SigningKeysError(f"{len(keys)} keys but no signing key id: say which one signs",
                                       signing_key_id=True)
            (signing_key_id,) = keys
        return cls(keys, signing_key_id)

    def sign(self, message: bytes) -> str:
        """The signature of ``message`` with the signing key: ``hmac-sha256:<key id>:<hex digest>``."""
        digest = hmac.new(self.keys[self.signing_key_id], message, hashlib.sha256).hexdigest()
        return f"{SCHEME}:{self.signing_key_id}:{digest}"

    def verify(self, message: bytes, signature: str) -> str | None:
        """Why ``signature`` does not sign ``message`` with one of the keys; None when it does."""
        scheme, _, rest = signature.partition(":")
        key_id, _, digest = rest.partition(":")
        if scheme != SCHEME or not key_id or not digest or not signature.isascii():
            return "not an hmac-sha256:<key id>:<digest> signature"
        key = self.keys.get(key_id)
        if key is None:
            return f"signed with an unknown key id {key_id[:64]!r}"
        expected = hmac.new(key, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest):
            return f"the signature does not match (key id {key_id!r})"
        return None


__all__ = ["MIN_KEY_BYTES", "SCHEME", "SigningKeys", "SigningKeysError"]
