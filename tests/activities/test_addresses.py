"""Phone and WhatsApp numbers are one address in E.164, however they are written; invalid ones say why."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from activities.addresses import InvalidPhoneNumber, PhoneProblem, normalise_address, parse_phone, unkeyed_address_hash

REGIONS = ("DE", "AT", "CH", "GB", "FR", "NL", "ES", "IT", "PL", "SE", "US", "CA", "BR", "IN", "JP", "AU", "ZA")
SEPARATORS = ("", " ", "-", ".", " - ")


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    """A mobile number of a drawn region: the region's example with its last digits drawn."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    assert example is not None
    national = phonenumbers.national_significant_number(example)
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")
    assume(phonenumbers.is_possible_number(number))
    return region, number


def _spaced(digits: str, draw: st.DrawFn) -> str:
    """``digits`` cut into groups with one drawn separator, the first group maybe in parentheses."""
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=4)))
    groups = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    if draw(st.booleans()):
        groups[0] = f"({groups[0]})"
    return draw(st.sampled_from(SEPARATORS)).join(groups)


@st.composite
def written(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """A number's region, its E.164 form, and the ways people and providers write it."""
    region, number = draw(numbers())
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    code, national = str(number.country_code), phonenumbers.national_significant_number(number)
    forms = [
        e164,
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        "+" + _spaced(code + national, draw),
        "+" + code + " " + _spaced(national, draw),
        "00" + code + draw(st.sampled_from(SEPARATORS)) + _spaced(national, draw),
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL).replace(" ", draw(st.sampled_from("-."))),
    ]
    forms += ["whatsapp:" + form for form in forms[:3]]
    return region, e164, [draw(st.sampled_from([" ", ""])) + form for form in forms]


@given(written())
def test_every_way_of_writing_a_number_is_one_address_and_one_hash(case: tuple[str, str, list[str]]) -> None:
    region, e164, forms = case

    for channel in ("sms", "whatsapp"):
        normalised = {normalise_address(channel, form, default_region=region) for form in forms}
        assert normalised == {e164}, forms
        assert {unkeyed_address_hash(channel, parse_phone(form, region)) for form in forms} == {unkeyed_address_hash(channel, e164)}
    # Written internationally, a number needs no region: the webhook service hashes what providers send.
    international = [f for f in forms if f.strip().removeprefix("whatsapp:").startswith(("+", "00"))]
    assert {unkeyed_address_hash("sms", form) for form in international} == {unkeyed_address_hash("sms", e164)}


def test_the_issue_numbers_are_one_number_with_the_german_default_region() -> None:
    forms = ["+49 151 23456789", "0049151-23456789", "0151 23456789", "(0151) 234.567.89", "whatsapp:+4915123456789"]

    assert {parse_phone(form, "DE") for form in forms} == {"+4915123456789"}
    assert len({unkeyed_address_hash("sms", normalise_address("sms", f, default_region="DE")) for f in forms}) == 1


@pytest.mark.parametrize(("written_as", "region", "problem"), [
    ("0151 23456789", None, PhoneProblem.NO_COUNTRY_CODE),
    ("call me", None, PhoneProblem.NOT_A_NUMBER),
    ("", "DE", PhoneProblem.NOT_A_NUMBER),
    ("+49 1", None, PhoneProblem.TOO_SHORT),
    ("+49 151 2345678901234567", None, PhoneProblem.TOO_LONG),
    ("+999 1234567", None, PhoneProblem.INVALID_COUNTRY_CODE),
    ("+49 151 23456789 ext. 12", None, PhoneProblem.EXTENSION),
])
def test_an_invalid_number_is_refused_with_its_problem_and_never_named(written_as: str, region: str | None,
                                                                      problem: PhoneProblem) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        parse_phone(written_as, region)

    assert caught.value.problem is problem
    assert str(caught.value) == f"not a valid phone number: {problem}"


def test_a_number_that_does_not_parse_still_hashes_by_its_digits_and_emails_by_lower_case() -> None:
    # A provider report may name a short code: it is never sent to, but its hash must still be stable.
    assert normalise_address("sms", " 12-34 ") == normalise_address("sms", "1234") == "1234"
    assert normalise_address("email", " Ada@Example.COM ") == "ada@example.com"
