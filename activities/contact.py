"""Who a notification goes to, resolved inside the send activity from the customer's profile.

Journeys carry the customer id, not the address (the consumer strips contact details from the
events it starts and signals journeys with, see `workflows.profile.journey_event`), so nothing of
an address enters a journey's history. At send time the activity asks a `ContactDirectory` (the
customer's ``CustomerPreferences`` workflow, by query: no history is written) for the contact
points, and builds the address, the timezone for quiet hours and caps, the template variant for
the profile's locale, and the ``profile.*`` template context here, in memory only. The activity's input and result hold none of it.

An address the journey's event still carries wins over the profile: only events whose source sets
``contact_override`` keep their contact details (and journeys started before this change carry
theirs), so such a journey sends where its event said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from activities.notifications import SendNotificationInput
from core.logs import mask_contact_details
from core.vocabulary import ADDRESS_FIELD, CHANNELS, ChannelName, ContactField
from events.model import JsonValue


@dataclass(frozen=True)
class ContactPoints:
    """A customer's contact points and personal settings as the profile holds them (None: unknown)."""

    email: str | None = None
    phone: str | None = None
    whatsapp: str | None = None
    first_name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, JsonValue] = field(default_factory=dict)

    def address_for(self, channel: str) -> str | None:
        """The address a channel sends to, its `ADDRESS_FIELD`; a WhatsApp number falls back to the phone.

        The device channels have none here: they send to the customer's devices (`activities.push`).
        """
        wanted = ADDRESS_FIELD.get(ChannelName(channel), ContactField.PHONE) if channel in CHANNELS \
            else ContactField.PHONE
        match wanted:
            case ContactField.EMAIL:
                return self.email or None
            case ContactField.WHATSAPP:
                return self.whatsapp or self.phone or None
            case ContactField.PHONE:
                return self.phone or None
            case _:
                return None

    def template_view(self) -> dict[str, JsonValue]:
        """``profile.*`` in templates: the fields by name, free attributes under ``profile.attributes``."""
        return {"email": self.email, "phone": self.phone, "whatsapp": self.whatsapp, "first_name": self.first_name,
                "timezone": self.timezone, "locale": self.locale, "attributes": dict(self.attributes)}


def sample_template_view() -> dict[str, JsonValue]:
    """``profile`` as journey validation test-renders templates with (example values, no attributes)."""
    return ContactPoints(email="ada@example.com", phone="+15550100000", whatsapp=None, first_name="Ada",
                         timezone="Europe/Berlin", locale="en").template_view()


class ContactDirectory(Protocol):
    """Where the send activity reads a customer's contact points at send time."""

    async def contact_points(self, customer_id: str) -> ContactPoints:
        """The customer's current contact points; empty when the customer has no profile."""
        ...


@dataclass(frozen=True)
class Recipient:
    """A resolved recipient: the address, and the notification with timezone and template context filled in.

    Lives in the activity's memory only; it is never returned or logged.
    """

    address: str
    notification: SendNotificationInput


async def resolve_recipient(directory: ContactDirectory | None,
                            notification: SendNotificationInput) -> Recipient | None:
    """The recipient of ``notification``, or None when the customer has no contact point for its channel."""
    carried = ContactPoints(email=notification.customer.email, phone=notification.customer.phone,
                            whatsapp=notification.customer.whatsapp)
    profile = ContactPoints() if directory is None else await directory.contact_points(notification.customer.id)
    address = carried.address_for(notification.channel) or profile.address_for(notification.channel)
    if not address:
        return None
    return Recipient(address, with_profile(notification, profile))


async def resolve_profile(directory: ContactDirectory | None,
                          notification: SendNotificationInput) -> SendNotificationInput:
    """``notification`` with the profile's timezone, locale variant and template context, whatever the address."""
    profile = ContactPoints() if directory is None else await directory.contact_points(notification.customer.id)
    return with_profile(notification, profile)


def with_profile(notification: SendNotificationInput, profile: ContactPoints) -> SendNotificationInput:
    """The notification with timezone, locale, first name and ``profile.*`` context from ``profile``."""
    customer = notification.customer
    resolved = replace(customer, timezone=profile.timezone or customer.timezone,
                       locale=profile.locale or customer.locale,
                       first_name=customer.first_name or profile.first_name)
    context = _with_profile(notification.context, profile)
    notification = replace(notification, customer=resolved, context=context)
    if profile.locale and notification.variants:
        notification = _in_locale(notification, profile.locale)
    return notification


def pick_locale(wanted: str, available: Mapping[str, Any], default: str) -> str:
    """The variant for ``wanted`` (``de-DE``), else its language (``de``), else the template default."""
    if wanted in available:
        return wanted
    language = wanted.replace("_", "-").split("-", 1)[0]
    return language if language in available else default


def _in_locale(notification: SendNotificationInput, wanted: str) -> SendNotificationInput:
    """The notification in the variant for ``wanted``; the fields are the ones `workflows.sending` fills in."""
    locale = pick_locale(wanted, notification.variants, notification.default_locale)
    variant = notification.variants.get(locale)
    if variant is None or locale == notification.locale:
        return notification
    return replace(
        notification, locale=locale, body_template=str(variant.get("body", "")),
        subject_template=variant.get("subject"), html_template=variant.get("html"),
        provider_template_id=str(variant.get("content_sid") or variant.get("sendgrid_template_id") or ""),
        template_variable_templates={str(k): str(v) for k, v in (variant.get("content_variables") or {}).items()})


def _with_profile(context: Mapping[str, Any], profile: ContactPoints) -> dict[str, Any]:
    """The render context plus ``profile``; the event's ``customer`` block gets the profile's values where it has none."""
    view = profile.template_view()
    customer = dict(context.get("customer") or {})
    for name in ("email", "phone", "first_name"):
        if customer.get(name) is None and view.get(name) is not None:
            customer[name] = view[name]
    return {**context, "customer": customer, "profile": view}


class MaskedProviderError(Exception):
    """A provider error as a journey's history may keep it: type and masked message, and no cause chain.

    Temporal records an activity failure's ``__cause__`` chain in the history, and provider
    messages and the exceptions beneath them may repeat the recipient's address.
    """


def masked_cause(exc: BaseException, *, depth: int = 5) -> MaskedProviderError:
    """``exc`` and the chain beneath it as one masked message, for ``raise ApplicationError(...) from masked_cause(exc)``.

    The provider's own words stay readable (``... number ***21 is not a valid phone number``).
    """
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < depth:
        parts.append(f"{type(current).__name__}: {mask_contact_details(str(current))}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return MaskedProviderError(" <- ".join(parts))
