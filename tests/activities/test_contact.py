"""Recipient resolution in the send activity: the event's own address wins, else the profile's; locale and context."""

from __future__ import annotations

from dataclasses import replace

from activities.contact import ContactPoints, masked_cause, resolve_recipient
from activities.notifications import SendNotificationInput
from events.model import Customer


class _Directory:
    def __init__(self, points: ContactPoints) -> None:
        self.points = points
        self.asked: list[str] = []

    async def contact_points(self, customer_id: str) -> ContactPoints:
        self.asked.append(customer_id)
        return self.points


VARIANTS = {"en": {"subject": "Hi", "body": "Hello {{ profile.first_name }}"},
            "de": {"subject": "Hallo", "body": "Hallo {{ profile.first_name }}"}}


def _notification(channel: str = "email", **customer: object) -> SendNotificationInput:
    return SendNotificationInput(
        idempotency_key="wf/s", channel=channel, customer=Customer(id="c1", **customer),  # type: ignore[arg-type]  # test fields
        template_id="t", locale="en", body_template=VARIANTS["en"]["body"], subject_template="Hi",
        context={"customer": {"id": "c1", "email": None, "first_name": None}}, variants=VARIANTS,
        default_locale="en")


PROFILE = ContactPoints(email="p@example.com", phone="+15550100001", first_name="Ada", timezone="Europe/Berlin",
                        locale="de-AT", attributes={"tier": "gold"})


async def test_a_journey_without_an_address_sends_to_the_profile_in_its_locale_and_zone() -> None:
    directory = _Directory(PROFILE)

    recipient = await resolve_recipient(directory, _notification())

    assert recipient is not None and directory.asked == ["c1"]
    resolved = recipient.notification
    assert recipient.address == "p@example.com"
    assert (resolved.locale, resolved.subject_template, resolved.body_template) == ("de", "Hallo",
                                                                                     VARIANTS["de"]["body"])
    assert (resolved.customer.timezone, resolved.customer.email) == ("Europe/Berlin", None)
    assert resolved.context["profile"]["attributes"] == {"tier": "gold"}
    assert resolved.context["customer"] == {"id": "c1", "email": "p@example.com", "first_name": "Ada",
                                            "phone": "+15550100001"}


async def test_the_profile_locale_picks_that_variant_html_part_too() -> None:
    variants = {"en": {**VARIANTS["en"], "html": "<p>Hi</p>"}, "de": {**VARIANTS["de"], "html": "<p>Hallo</p>"}}
    notification = replace(_notification(), variants=variants, html_template="<p>Hi</p>")

    recipient = await resolve_recipient(_Directory(PROFILE), notification)

    assert recipient is not None and recipient.notification.html_template == "<p>Hallo</p>"


async def test_an_address_the_event_carries_wins_over_the_profile() -> None:
    recipient = await resolve_recipient(_Directory(PROFILE), _notification("sms", phone="+15550199999"))

    assert recipient is not None and recipient.address == "+15550199999"


async def test_no_contact_point_for_the_channel_is_none() -> None:
    assert await resolve_recipient(_Directory(ContactPoints(email="p@example.com")), _notification("sms")) is None
    assert await resolve_recipient(None, _notification()) is None


def test_a_masked_cause_keeps_the_chain_readable_and_hides_the_address() -> None:
    try:
        try:
            raise ValueError("The 'To' number +4915112345678 is not a valid phone number.")
        except ValueError as inner:
            raise RuntimeError("provider refused ada.lovelace@example.com") from inner
    except RuntimeError as outer:
        cause = masked_cause(outer)

    text = str(cause)
    assert text.startswith("RuntimeError: provider refused") and "<- ValueError: The 'To' number" in text
    assert "is not a valid phone number" in text
    assert "ada.lovelace@example.com" not in text and "4915112345678" not in text and cause.__cause__ is None
