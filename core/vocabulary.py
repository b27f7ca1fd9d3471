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
    #: Mobile app push through Firebase Cloud Messaging (Android, and iOS through FCM's APNs relay).
    PUSH = "push"
    #: Browser push (RFC 8030 Web Push, VAPID and aes128gcm payload encryption).
    WEBPUSH = "webpush"


#: Every channel name, in declaration order.
CHANNELS: tuple[str, ...] = tuple(channel.value for channel in ChannelName)


class ContactField(StrEnum):
    """A profile field that identifies a person: never in logs, metrics, traces, keys or workflow history."""

    EMAIL = "email"
    PHONE = "phone"
    WHATSAPP = "whatsapp"
    FIRST_NAME = "first_name"
    #: An app installation's FCM registration token (many per customer, in the store's device list).
    PUSH_TOKEN = "push_token"
    #: A browser's Web Push subscription (endpoint and keys; many per customer, in the device list).
    WEBPUSH_SUBSCRIPTION = "webpush_subscription"


#: The profile field each channel's address is read from (whatsapp falls back to the phone;
#: the push channels read the customer's device list instead).
ADDRESS_FIELD: dict[ChannelName, ContactField] = {
    ChannelName.EMAIL: ContactField.EMAIL,
    ChannelName.SMS: ContactField.PHONE,
    ChannelName.WHATSAPP: ContactField.WHATSAPP,
    ChannelName.PUSH: ContactField.PUSH_TOKEN,
    ChannelName.WEBPUSH: ContactField.WEBPUSH_SUBSCRIPTION,
}

#: The contact fields that hold phone numbers (compared in E.164, hashed as one address).
PHONE_FIELDS: frozenset[ContactField] = frozenset({ContactField.PHONE, ContactField.WHATSAPP})

#: The channels whose addresses are phone numbers: their `ADDRESS_FIELD` is one of `PHONE_FIELDS`.
PHONE_CHANNELS: frozenset[ChannelName] = frozenset(
    channel for channel, address in ADDRESS_FIELD.items() if address in PHONE_FIELDS)
#: Channels that reach devices rather than one address: a send goes to each of the customer's
#: registered devices (`activities.push`), one provider call per device.
DEVICE_CHANNELS: frozenset[ChannelName] = frozenset({ChannelName.PUSH, ChannelName.WEBPUSH})
