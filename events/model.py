"""The decoded form of a customer event, as the consumer routes it and workflows receive it.

Values are JSON-safe (decimals and timestamps become strings) so the event can travel through
Temporal's default data converter unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

#: JSON-safe values; spelled ``Any`` because Temporal's converter cannot follow a recursive alias.
JsonValue: TypeAlias = Any


@dataclass(frozen=True)
class Customer:
    """Who an event is about and how to reach them."""

    id: str
    email: str | None = None
    phone: str | None = None
    timezone: str = "UTC"
    locale: str = "en"
    first_name: str | None = None
    #: WhatsApp number, when it differs from ``phone``.
    whatsapp: str | None = None
    #: Free profile attributes a source maps from the event (``profile.*`` in templates).
    attributes: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerEvent:
    """One decoded customer event.

    Attributes:
        event_id: producer-assigned unique id; redeliveries and replays keep it.
        event_type: payload record name, e.g. ``PurchaseCompleted``.
        occurred_at: ISO 8601 UTC timestamp.
        customer: the customer block.
        payload: the typed body as JSON-safe values.
    """

    event_id: str
    event_type: str
    occurred_at: str
    customer: Customer
    payload: dict[str, JsonValue] = field(default_factory=dict)
    #: Name of the event source (`events.sources`) that read it; ``""`` for the built-in envelope.
    source: str = ""
    #: The source marks this event as an identify/profile event: its contact details update the profile.
    identify: bool = False
    #: The source lets this event's contact details override the profile's for its own journeys.
    contact_override: bool = False

    def as_context(self) -> Mapping[str, JsonValue]:
        """The event as a plain mapping, for filters, expressions and templates."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at,
            "customer": {
                "id": self.customer.id,
                "email": self.customer.email,
                "phone": self.customer.phone,
                "timezone": self.customer.timezone,
                "locale": self.customer.locale,
                "first_name": self.customer.first_name,
            },
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Unwanted:
    """A record of an event type nobody asked for: only its type was read, and the rest of it stays unread."""

    event_type: str


#: What a decoder gives for a record when told which event types are wanted.
Decoded: TypeAlias = CustomerEvent | Unwanted
