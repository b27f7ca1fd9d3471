"""Customer profiles: contact points, timezone, locale, first name and free attributes, per customer.

The profile lives in the customer's ``CustomerPreferences`` workflow (workflows/preferences.py),
the one per-customer entity Eventflow already keeps, so it is durable and shared by every replica
without another server. This module holds the profile's pure logic, which that workflow calls:

* `profile_update_of` reads what an event says about its customer (an identify event, a built-in
  ``ProfileUpdated``/``UserSignedUp``, or any event with contact details in its customer block);
* `apply_update` folds it in field by field: a field takes the value of the update that occurred
  last (``occurred_at``, ties broken by event id), so redelivered and out-of-order events change
  nothing twice and the result does not depend on arrival order;
* `journey_event` is the event a journey is started or signalled with: the customer id, timezone
  and locale only, so no address enters a journey's history (unless the source sets
  ``contact_override``).

The built-in envelope fills timezone and locale with defaults (``UTC``, ``en``) when the producer
did not know them, so those two values count as unknown and change nothing, unless a
``ProfileUpdated`` names the field in its ``changed_fields`` (a customer who switched to English).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contact import ContactPoints
    from events.model import Customer, CustomerEvent, JsonValue

PROFILE_UPDATED_SIGNAL = "profile_updated"
CONTACT_POINTS_QUERY = "contact_points"
#: Event types that are identify events whatever their source says.
IDENTIFY_EVENT_TYPES = frozenset({"ProfileUpdated", "UserSignedUp"})
#: The profile's own fields (free attributes are stamped as ``attributes.<name>``).
PROFILE_FIELDS = ("email", "phone", "whatsapp", "first_name", "timezone", "locale")
_DEFAULTS = {"timezone": "UTC", "locale": "en"}
_ATTRIBUTE = "attributes."


@dataclass(frozen=True)
class Stamp:
    """Which event last set a field, and when it occurred."""

    occurred_at: str
    event_id: str

    def key(self) -> tuple[datetime, str]:
        return _instant(self.occurred_at), self.event_id


@dataclass(frozen=True)
class CustomerProfile:
    """One customer's profile. ``stamps`` names, per field (``email``, ``attributes.tier``), the update it holds."""

    email: str | None = None
    phone: str | None = None
    whatsapp: str | None = None
    first_name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    stamps: dict[str, Stamp] = field(default_factory=dict)

    def contact_points(self) -> ContactPoints:
        return ContactPoints(email=self.email, phone=self.phone, whatsapp=self.whatsapp, first_name=self.first_name,
                             timezone=self.timezone, locale=self.locale, attributes=dict(self.attributes))

    def field_names(self) -> list[str]:
        """The names of the fields that hold a value (for reports: never the values)."""
        return sorted(self.stamps)


@dataclass(frozen=True)
class ProfileUpdate:
    """What one event says about its customer (the ``profile_updated`` signal). None: the event does not say."""

    event_id: str
    occurred_at: str
    identify: bool = False
    email: str | None = None
    phone: str | None = None
    whatsapp: str | None = None
    first_name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, JsonValue] = field(default_factory=dict)


def is_identify(event: CustomerEvent) -> bool:
    """Whether the event is an identify event: its source says so, or it is a built-in profile event."""
    return event.identify or event.event_type in IDENTIFY_EVENT_TYPES


def profile_update_of(event: CustomerEvent) -> ProfileUpdate | None:
    """The profile update ``event`` carries; None when it carries nothing for the profile."""
    customer, identify = event.customer, is_identify(event)
    named = _changed_fields(event)
    settings = {name: value for name, value in (("timezone", customer.timezone), ("locale", customer.locale))
                if value and (value != _DEFAULTS[name] or name in named)}
    update = ProfileUpdate(event_id=event.event_id, occurred_at=event.occurred_at, identify=identify,
                           email=customer.email or None, phone=customer.phone or None,
                           whatsapp=customer.whatsapp or None, first_name=customer.first_name or None,
                           attributes=dict(customer.attributes), **settings)
    carries = any(getattr(update, name) is not None for name in PROFILE_FIELDS) or update.attributes
    return update if identify or carries else None


def _changed_fields(event: CustomerEvent) -> frozenset[str]:
    """The fields a ``ProfileUpdated`` names as changed (its ``changed_fields``); empty for other events."""
    named = event.payload.get("changed_fields") if event.event_type == "ProfileUpdated" else None
    return frozenset(str(name) for name in named) if isinstance(named, list) else frozenset()


def apply_update(profile: CustomerProfile, update: ProfileUpdate) -> CustomerProfile:
    """``profile`` with every field ``update`` carries that occurred after the field's current value."""
    stamp = Stamp(update.occurred_at, update.event_id)
    values: dict[str, object] = {}
    stamps = dict(profile.stamps)
    for name in PROFILE_FIELDS:
        value = getattr(update, name)
        if value is not None and _newer(stamp, stamps.get(name)):
            values[name] = value
            stamps[name] = stamp
    attributes = dict(profile.attributes)
    for name, value in update.attributes.items():
        if _newer(stamp, stamps.get(_ATTRIBUTE + name)):
            attributes[name] = value
            stamps[_ATTRIBUTE + name] = stamp
    if not values and attributes == profile.attributes and stamps == profile.stamps:
        return profile
    return replace(profile, attributes=attributes, stamps=stamps, **values)  # type: ignore[arg-type]  # names checked above


def merge_profiles(older: CustomerProfile, newer: CustomerProfile) -> CustomerProfile:
    """Both profiles' fields, each from whichever set it later (used when a run starts with carried state)."""
    merged = older
    for name in PROFILE_FIELDS:
        stamp = newer.stamps.get(name)
        if stamp is not None:
            merged = apply_update(merged, ProfileUpdate(stamp.event_id, stamp.occurred_at,
                                                        **{name: getattr(newer, name)}))
    for name, value in newer.attributes.items():
        stamp = newer.stamps.get(_ATTRIBUTE + name)
        if stamp is not None:
            merged = apply_update(merged, ProfileUpdate(stamp.event_id, stamp.occurred_at, attributes={name: value}))
    return merged


def journey_event(event: CustomerEvent) -> CustomerEvent:
    """The event a journey gets: without contact details, unless its source lets them override the profile."""
    if event.contact_override:
        return event
    customer = event.customer
    return replace(event, customer=Customer(id=customer.id, timezone=customer.timezone, locale=customer.locale))


def _newer(stamp: Stamp, current: Stamp | None) -> bool:
    return current is None or stamp.key() > current.key()


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
