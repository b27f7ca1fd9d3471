"""Payload encryption for Temporal: an AES-256-GCM `PayloadCodec` with a keyring that rotates.

Every payload a client or worker sends to Temporal (workflow and activity inputs and results,
signals, queries, updates, memo, failure details and, with `data_converter`, failure messages and
stack traces) is replaced by one whose ``data`` is ``nonce || AES-GCM(serialized payload)`` and
whose metadata says ``encoding: binary/encrypted``, which key encrypted it (``encryption-key-id``),
the cipher and the associated-data version (``encryption-aad: 2``). The GCM associated data binds
all of that to the ciphertext (`associated_data`: a fixed context label, the version, key id,
cipher and encoding), so a payload whose metadata was swapped or rewritten fails authentication
like one whose ciphertext was altered, and a ciphertext cannot be carried to another use of the
same key. Payloads written before the version existed (no ``encryption-aad``) were sealed with the
key id alone as associated data and still decrypt that way; stripping the version from a new
payload to fall back to that form fails authentication, since its data was sealed with the new.

A `Keyring` holds every key that may decrypt (old ones stay until no history needs them) and the
one that encrypts. Decoding passes through payloads that are not encrypted, so histories written
before encryption was turned on still decode and replay.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from core.errors import EventflowError
from core.payloads import PayloadConverter

ENCODING = b"binary/encrypted"
"""The ``encoding`` metadata of an encrypted payload (the value Temporal's samples and tools use)."""
KEY_ID_METADATA = "encryption-key-id"
CIPHER_METADATA = "encryption-cipher"
CIPHER = b"AES256-GCM"
AAD_VERSION_METADATA = "encryption-aad"
#: The associated-data format new payloads are sealed with (1, implicit: the key id alone).
AAD_VERSION = b"2"
#: What the ciphertext is for, in its associated data: Temporal payloads of Eventflow, nothing else.
AAD_CONTEXT = b"eventflow/temporal-payload"
KEY_BYTES = 32
NONCE_BYTES = 12

#: A key id: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyringError(ValueError):
    """The configured keys are unusable; the message says why (never the key material).

    Attributes:
        encrypt_key_id: True when the fault is the choice of encrypting key (missing, or not a key).
    """

    def __init__(self, problem: str, *, encrypt_key_id: bool = False) -> None:
        super().__init__(problem)
        self.encrypt_key_id = encrypt_key_id


class PayloadDecryptionError(EventflowError):
    """An encrypted payload could not be decrypted.

    Attributes:
        key_id: the key id in the payload's metadata ("" when absent).
        reason: ``unknown key id``, ``authentication failed`` (tampered, or another key with the
            same id) or ``malformed``.
    """

    def __init__(self, key_id: str, reason: str) -> None:
        super().__init__(f"cannot decrypt a Temporal payload (key id {key_id!r}): {reason}")
        self.key_id = key_id
        self.reason = reason


@dataclass(frozen=True)
class Keyring:
    """The keys that decrypt, by id, and the id of the one that encrypts.

    Attributes:
        keys: key id -> 32 raw bytes (AES-256).
        encrypt_key_id: the key new payloads are encrypted with; one of ``keys``.
    """

    keys: Mapping[str, bytes] = field(repr=False)
    encrypt_key_id: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("no key")
        for key_id, key in self.keys.items():
            if not KEY_ID.match(key_id):
                raise KeyringError(f"key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                                   "(generate one with `openssl rand -base64 32`)")
        if self.encrypt_key_id not in self.keys:
            raise KeyringError(f"the encrypt key id {self.encrypt_key_id!r} is not among the keys "
                               f"({', '.join(sorted(self.keys))})", encrypt_key_id=True)

    @classmethod
    def parse(cls, text: str, encrypt_key_id: str | None = None) -> Keyring:
        """Reads ``id=base64key`` items separated by commas or new lines (blank lines and ``#`` comments skipped).

        Args:
            encrypt_key_id: the encrypting key; may be omitted when there is exactly one key.

        Raises:
            KeyringError: a malformed item, bad base64, a wrong key length, a duplicate id, or an
                encrypt key id that is missing or not among the keys.
        """
        keys = parse_key_items(text, KeyringError)
        if encrypt_key_id is None:
            if len(keys) > 1:
                raise KeyringError(f"{len(keys)} keys but no encrypt key id: say which one encrypts",
                                   encrypt_key_id=True)
            (encrypt_key_id,) = keys
        return cls(keys, encrypt_key_id)


def parse_key_items(text: str, error: Callable[[str], Exception]) -> dict[str, bytes]:
    """Key id -> raw bytes from ``id=base64key`` items separated by commas or new lines (blank lines and
    ``#`` comments skipped): the grammar of the payload keys and the catalog signing keys.

    Raises:
        Exception: ``error(message)`` for a malformed item, a bad id, bad base64, a duplicate id or
            no item at all; a message never repeats an item's text (it may be a bare key).
    """
    keys: dict[str, bytes] = {}
    for number, item in enumerate(_items(text), start=1):
        key_id, sep, encoded = item.partition("=")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise error(f"item {number} is not id=base64key")
        if not KEY_ID.match(key_id) or not encoded.strip():
            raise error(f"item {number} is not id=base64key (an id is 1-64 letters, digits, '.', '_' or '-')")
        if key_id in keys:
            raise error(f"key id {key_id!r} appears twice")
        try:
            keys[key_id] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise error(f"key {key_id!r} is not valid base64") from None
    if not keys:
        raise error("lists no key")
    return keys


def _items(text: str) -> Iterable[str]:
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        yield from (part.strip() for part in line.split(",") if part.strip())


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the keyring's encrypt key; decrypts with whichever key the payload names."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._encrypt_id = keyring.encrypt_key_id
        self._encrypt_id_bytes = keyring.encrypt_key_id.encode()

    @property
    def encrypt_key_id(self) -> str:
        return self._encrypt_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypts each payload (already encrypted ones are kept as they are)."""
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypts each encrypted payload; a payload that is not encrypted passes through.

        Raises:
            PayloadDecryptionError: an encrypted payload names an unknown key or fails authentication.
        """
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        if is_encrypted(payload):
            return payload
        nonce = os.urandom(NONCE_BYTES)
        metadata = {"encoding": ENCODING, KEY_ID_METADATA: self._encrypt_id_bytes, CIPHER_METADATA: CIPHER,
                    AAD_VERSION_METADATA: AAD_VERSION}
        sealed = self._ciphers[self._encrypt_id].encrypt(nonce, payload.SerializeToString(), associated_data(metadata))
        return Payload(metadata=metadata, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if not is_encrypted(payload):
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(key_id, "unknown key id")
        if len(payload.data) <= NONCE_BYTES:
            raise PayloadDecryptionError(key_id, "malformed")
        try:
            aad = associated_data(payload.metadata)
        except ValueError:
            raise PayloadDecryptionError(key_id, "malformed (unknown associated-data version)") from None
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], aad)
        except InvalidTag:
            raise PayloadDecryptionError(key_id, "authentication failed (tampered, or a different key)") from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError(key_id, "malformed") from None


def associated_data(metadata: Mapping[str, bytes]) -> bytes:
    """The GCM associated data of an encrypted payload with ``metadata``.

    Version 2: the context label, version, key id, cipher and encoding, each length-prefixed so no
    two different sets of values give the same bytes. No version: the key id (payloads written
    before version 2). Raises ValueError for a version this code does not know.
    """
    version = metadata.get(AAD_VERSION_METADATA)
    if version is None:
        return bytes(metadata.get(KEY_ID_METADATA, b""))
    if version != AAD_VERSION:
        raise ValueError(f"associated-data version {version!r}")
    fields = (AAD_CONTEXT, AAD_VERSION, metadata.get(KEY_ID_METADATA, b""), metadata.get(CIPHER_METADATA, b""),
              metadata.get("encoding", b""))
    return b"".join(len(item).to_bytes(4, "big") + bytes(item) for item in fields)


def is_encrypted(payload: Payload) -> bool:
    """Whether ``payload`` is one this codec (or another Temporal encryption codec) wrote."""
    return payload.metadata.get("encoding") == ENCODING


def data_converter(keyring: Keyring | None) -> DataConverter:
    """The data converter of every Eventflow client: encrypted payloads and failure messages, or the default.

    Without a keyring nothing is encrypted (the embedded default and the dev stack need no keys).
    With one, failures' messages and stack traces move into their encoded attributes, so an
    address in an exception's text is encrypted too.
    """
    if keyring is None:
        return DataConverter(payload_converter_class=PayloadConverter)
    return DataConverter(payload_converter_class=PayloadConverter, payload_codec=EncryptionCodec(keyring),
                         failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


__all__ = ["AAD_VERSION", "AAD_VERSION_METADATA", "CIPHER", "CIPHER_METADATA", "ENCODING", "EncryptionCodec",
           "KEY_ID_METADATA", "Keyring", "KeyringError", "PayloadDecryptionError", "associated_data", "data_converter",
           "is_encrypted"]
