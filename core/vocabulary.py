"""The vocabularies every layer shares, each defined once: channels, contact fields, record encodings.

Everything else is derived from these (queues, caps scopes, settings patterns, webhook labels) or
checked against them by a test (the journey JSON Schema, the chart's values).
"""

from __future__ import annotations

from enum import StrEnum


class ChannelName(StrEnum):
    """A way to reach a customer; each has a send queue, caps scope, provider settings and template variants."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"


#: Every channel name, in declaration order.
CHANNELS: tuple[str, ...] = tuple(channel.value for channel in ChannelName)


class ContactField(StrEnum):
    """A profile field that identifies a person: never in logs, metrics, traces, keys or workflow history."""

    EMAIL = "email"
    PHONE = "phone"
    WHATSAPP = "whatsapp"
    FIRST_NAME = "first_name"


#: The profile field each channel's address is read from (whatsapp falls back to the phone).
ADDRESS_FIELD: dict[ChannelName, ContactField] = {
    ChannelName.EMAIL: ContactField.EMAIL,
    ChannelName.SMS: ContactField.PHONE,
    ChannelName.WHATSAPP: ContactField.WHATSAPP,
}

#: The contact fields that hold phone numbers (compared in E.164, hashed as one address).
PHONE_FIELDS: frozenset[ContactField] = frozenset({ContactField.PHONE, ContactField.WHATSAPP})

#: The channels whose addresses are phone numbers: their `ADDRESS_FIELD` is one of `PHONE_FIELDS`.
PHONE_CHANNELS: frozenset[ChannelName] = frozenset(
    channel for channel, address in ADDRESS_FIELD.items() if address in PHONE_FIELDS)
