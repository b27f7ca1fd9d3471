"""Contact addresses as the ledger and the suppression list know them: a hash, never the address.

The send activity, the webhook service and the customer's preferences workflow all name an
address by `address_hash`, so a bounce or a STOP can be matched to later sends without an email
address or phone number ever reaching Temporal history, logs or metrics.

Phone and WhatsApp numbers compare in E.164 (`parse_phone`, Google's libphonenumber through
``phonenumbers``): ``+49 151 2345678``, ``0049-151-2345678``, ``whatsapp:+491512345678`` and, with
the default region DE, ``0151 2345678`` are one address, so a STOP or a bounce for one of them
suppresses them all and caps count them together.
"""

from __future__ import annotations

import enum
import hashlib

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from core.errors import EventflowError

#: The channels whose addresses are phone numbers.
PHONE_CHANNELS = frozenset({"sms", "whatsapp"})

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


def address_hash(channel: str, address: str) -> str:
    """A stable, opaque name of ``address`` on ``channel`` (hex, 32 characters); ``""`` for no address."""
    normalised = normalise_address(channel, address)
    if not normalised:
        return ""
    digest = hashlib.sha256(_PREFIX + channel.encode() + b"\x00" + normalised.encode())
    return digest.hexdigest()[:32]
