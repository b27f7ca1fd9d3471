"""Contact addresses as the ledger and the suppression list know them: a hash, never the address.

The send activity, the webhook service and the customer's preferences workflow all name an
address by `address_hash`, so a bounce or a STOP can be matched to later sends without an email
address or phone number ever reaching Temporal history, logs or metrics.

Phone and WhatsApp numbers compare in E.164 (`parse_phone`, Google's libphonenumber through
``phonenumbers``): ``+49 151 2345678``, ``0049-151-2345678``, ``whatsapp:+491512345678`` and, with
the default region DE, ``0151 2345678`` are one address, so a STOP or a bounce for one of them
suppresses them all and caps count them together.

The hash is keyed (`AddressHasher`: HMAC-SHA256 with a secret key, ``EVENTFLOW_ADDRESS_HASH_KEYS``),
so a hash found in a database dump, a history or a log cannot be turned back into a phone number
by hashing every number of a country (a few seconds on one core for unkeyed SHA-256). A keyed
hash names its key (``<key id>:<32 hex>``), so keys rotate: every configured key (and, while
``EVENTFLOW_ADDRESS_HASH_LEGACY_READS`` allows, the unkeyed form written before keys existed,
32 hex characters alone) is tried on lookup, and only the current key writes. See
docs/architecture.md, "Keyed address hashes".
"""

from __future__ import annotations

import enum
import hashlib
import hmac

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from core.errors import EventflowError
from core.settings import AddressHashSettings
from core.signing import SigningKeys
from core.vocabulary import PHONE_CHANNELS as PHONE_CHANNELS  # re-exported: the send activity reads it here

#: Domain separation, so these hashes are not plain SHA-256 of an address found elsewhere.
_PREFIX = b"eventflow-address/v1\x00"


class PhoneProblem(enum.StrEnum):
    """Why a phone number was refused."""

    NOT_A_NUMBER = "not_a_number"
    #: A national number (``0151 ...``) with no default region to read it in (EVENTFLOW_PHONE_DEFAULT_REGION).
    NO_COUNTRY_CODE = "no_country_code"
    INVALID_COUNTRY_CODE = "invalid_country_code"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_LENGTH = "invalid_length"
    #: ``... ext. 12``: a message cannot dial an extension.
    EXTENSION = "extension"


class InvalidPhoneNumber(EventflowError):
    """A phone or WhatsApp number that no provider could deliver to; the message never names the number.

    Attributes:
        problem: why.
    """

    def __init__(self, problem: PhoneProblem) -> None:
        super().__init__(f"not a valid phone number: {problem}")
        self.problem = problem


_PARSE_PROBLEMS = {
    NumberParseException.INVALID_COUNTRY_CODE: PhoneProblem.INVALID_COUNTRY_CODE,
    NumberParseException.NOT_A_NUMBER: PhoneProblem.NOT_A_NUMBER,
    NumberParseException.TOO_SHORT_AFTER_IDD: PhoneProblem.TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: PhoneProblem.TOO_SHORT,
    NumberParseException.TOO_LONG: PhoneProblem.TOO_LONG,
}
_LENGTH_PROBLEMS = {
    ValidationResult.INVALID_COUNTRY_CODE: PhoneProblem.INVALID_COUNTRY_CODE,
    ValidationResult.TOO_SHORT: PhoneProblem.TOO_SHORT,
    ValidationResult.TOO_LONG: PhoneProblem.TOO_LONG,
    ValidationResult.INVALID_LENGTH: PhoneProblem.INVALID_LENGTH,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: PhoneProblem.TOO_SHORT,
}


def parse_phone(address: str, default_region: str | None = None) -> str:
    """``address`` (a phone or WhatsApp number in any common format) in E.164: ``+491512345678``.

    Accepted: a ``whatsapp:`` prefix, spaces, dashes, dots and parentheses, ``+`` or ``00`` before
    the country code, and a national number (``0151 2345678``) when ``default_region`` (ISO 3166
    alpha-2, ``DE``) says whose. A number is refused when its length cannot be right for its
    country; whether the number is *assigned* is left to the provider, since libphonenumber's
    ranges lag behind new allocations and a refusal here is permanent.

    Raises:
        InvalidPhoneNumber: naming the problem, never the number.
    """
    text = address.strip().removeprefix("whatsapp:").strip()
    if text.startswith("00"):
        # 00 is the international prefix of most countries; read it as + whatever the default region's is.
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        national = exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and not text.startswith("+")
        raise InvalidPhoneNumber(PhoneProblem.NO_COUNTRY_CODE if national and default_region is None
                                 else _PARSE_PROBLEMS.get(exc.error_type, PhoneProblem.NOT_A_NUMBER)) from None
    if number.extension:
        raise InvalidPhoneNumber(PhoneProblem.EXTENSION)
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        raise InvalidPhoneNumber(_LENGTH_PROBLEMS.get(possible, PhoneProblem.INVALID_LENGTH))
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def normalise_address(channel: str, address: str, *, default_region: str | None = None) -> str:
    """The comparable form: emails lower-cased; phone and WhatsApp numbers in E.164 (`parse_phone`).

    A number `parse_phone` refuses (it is never sent to, but a provider report may still name
    one, a short code say) keeps its digits and ``+``, without ``whatsapp:`` and separators.
    """
    text = address.strip()
    if channel == "email":
        return text.lower()
    try:
        return parse_phone(text, default_region)
    except InvalidPhoneNumber:
        return "".join(ch for ch in text.removeprefix("whatsapp:") if ch not in " -().")


def _message(channel: str, normalised: str) -> bytes:
    return _PREFIX + channel.encode() + b"\x00" + normalised.encode()


def unkeyed_address_hash(channel: str, address: str) -> str:
    """The legacy, unkeyed form (SHA-256, hex, 32 characters; ``""`` for no address).

    Written before address keys existed, and still when none are configured (development). Anyone
    can recompute it from a guessed address: lookups read it while legacy reads are on, and new
    values use it only without keys.
    """
    normalised = normalise_address(channel, address)
    if not normalised:
        return ""
    return hashlib.sha256(_message(channel, normalised)).hexdigest()[:32]


class AddressHasher:
    """Names addresses by a keyed hash (HMAC-SHA256) under rotating keys; the one place addresses are hashed.

    Args:
        keys: the address keys by id and the id of the one new hashes are made with; None (development)
            hashes unkeyed (`unkeyed_address_hash`).
        legacy_reads: lookups also try the unkeyed form, so suppressions, STOPs and address links
            written before keys were configured keep working (turn off once they are migrated).
    """

    def __init__(self, keys: SigningKeys | None = None, *, legacy_reads: bool = True) -> None:
        self._keys = keys
        self._legacy_reads = legacy_reads or keys is None

    @property
    def keyed(self) -> bool:
        """Whether new hashes are keyed."""
        return self._keys is not None

    def _keyed(self, key_id: str, channel: str, normalised: str) -> str:
        assert self._keys is not None
        digest = hmac.new(self._keys.keys[key_id], _message(channel, normalised), hashlib.sha256)
        return f"{key_id}:{digest.hexdigest()[:32]}"

    def hash(self, channel: str, address: str) -> str:
        """The form written now: ``<current key id>:<32 hex>`` (unkeyed without keys); ``""`` for no address."""
        if self._keys is None:
            return unkeyed_address_hash(channel, address)
        normalised = normalise_address(channel, address)
        return self._keyed(self._keys.signing_key_id, channel, normalised) if normalised else ""

    def forms(self, channel: str, address: str) -> tuple[str, ...]:
        """Every form a stored hash of ``address`` may have: the current key's first, then the other
        keys', then (with legacy reads) the unkeyed one. Empty for no address."""
        normalised = normalise_address(channel, address)
        if not normalised:
            return ()
        found: list[str] = []
        if self._keys is not None:
            current = self._keys.signing_key_id
            found += [self._keyed(key_id, channel, normalised)
                      for key_id in (current, *sorted(k for k in self._keys.keys if k != current))]
        if self._legacy_reads:
            found.append(hashlib.sha256(_message(channel, normalised)).hexdigest()[:32])
        return tuple(found)


#: Development's hasher: unkeyed, as before keys existed.
UNKEYED = AddressHasher()


def address_hasher(settings: AddressHashSettings) -> AddressHasher:
    """The hasher a process's settings describe (``EVENTFLOW_ADDRESS_HASH_*``)."""
    return AddressHasher(settings.hash_keys(), legacy_reads=settings.legacy_reads)


def hash_key_id(hashed: str) -> str | None:
    """The key id a stored hash names; None for the legacy unkeyed form."""
    key_id, sep, _ = hashed.rpartition(":")
    return key_id if sep else None
