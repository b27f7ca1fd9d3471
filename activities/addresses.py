"""Contact addresses as the ledger and the suppression list know them: a hash, never the address.

The send activity, the webhook service and the customer's preferences workflow all name an
address by `address_hash`, so a bounce or a STOP can be matched to later sends without an email
address or phone number ever reaching Temporal history, logs or metrics.
"""

from __future__ import annotations

import hashlib

#: Domain separation, so these hashes are not plain SHA-256 of an address found elsewhere.
_PREFIX = b"eventflow-address/v1\x00"


def normalise_address(channel: str, address: str) -> str:
    """The comparable form: emails lower-cased; phone numbers without ``whatsapp:``, spaces or dashes."""
    text = address.strip()
    if channel == "email":
        return text.lower()
    text = text.removeprefix("whatsapp:")
    return "".join(ch for ch in text if ch not in " -().")


def address_hash(channel: str, address: str) -> str:
    """A stable, opaque name of ``address`` on ``channel`` (hex, 32 characters); ``""`` for no address."""
    normalised = normalise_address(channel, address)
    if not normalised:
        return ""
    digest = hashlib.sha256(_PREFIX + channel.encode() + b"\x00" + normalised.encode())
    return digest.hexdigest()[:32]
