"""Push channels reach devices, not an address: the device list, its per-device ledger, the push parts.

A customer has any number of app installations (FCM registration tokens, channel ``push``) and
browser subscriptions (Web Push, channel ``webpush``), kept in the customer store
(`store.devices`). One send of a push step goes to every device of the channel, one provider call
per device: the send is reserved once in the delivery ledger (opt-out, quiet hours and caps count
it once, ADR-9's lease fences its attempts) and each device's call is marked and recorded under the
send's key (`DeviceLedger`), so a retry after a crash calls only the devices no attempt called.
A device the provider reports gone (`activities.errors.DeviceGoneError`) is removed.

A push variant of a template has ``title`` and ``body``, and optionally ``link`` (the deep link the
notification opens) and ``data`` (string values for the app or service worker); each is Jinja2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from activities.notifications import SendNotificationInput
from activities.rendering import RenderPart, render_parts_async
from core.errors import EventflowError
from core.vocabulary import DEVICE_CHANNELS, ChannelName

_PREFIX = b"eventflow-device/v1\x00"
#: The parts of a push variant besides ``body``, in the order validation reports them.
PUSH_PARTS = ("title", "link")


def is_device_channel(channel: str) -> bool:
    """Whether ``channel`` sends to each of the customer's devices (``push``, ``webpush``)."""
    return channel in DEVICE_CHANNELS


class InvalidDevice(EventflowError):
    """A device registration that cannot be used (a Web Push subscription without its keys, an empty token).

    The message names what is wrong, never the token or endpoint.
    """


@dataclass(frozen=True)
class WebPushSubscription:
    """A browser's ``PushSubscription`` as its ``toJSON()`` gives it: the push service endpoint and the keys.

    Attributes:
        endpoint: the push service URL the browser was given (https).
        p256dh: the browser's P-256 public key, base64url (RFC 8291 ``ua_public``).
        auth: the 16-byte authentication secret, base64url.
    """

    endpoint: str
    p256dh: str
    auth: str

    @classmethod
    def parse(cls, text: str | Mapping[str, Any]) -> WebPushSubscription:
        """From the JSON text or mapping; raises `InvalidDevice`."""
        try:
            raw = json.loads(text) if isinstance(text, str) else text
        except ValueError:
            raise InvalidDevice("a web push subscription must be JSON with endpoint and keys") from None
        if not isinstance(raw, Mapping):
            raise InvalidDevice("a web push subscription must be a JSON object with endpoint and keys")
        endpoint, keys = raw.get("endpoint"), raw.get("keys")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise InvalidDevice("a web push subscription needs an http(s) endpoint")
        if not isinstance(keys, Mapping) or not all(isinstance(keys.get(k), str) and keys.get(k)
                                                    for k in ("p256dh", "auth")):
            raise InvalidDevice("a web push subscription needs keys.p256dh and keys.auth")
        return cls(endpoint, str(keys["p256dh"]), str(keys["auth"]))

    def to_json(self) -> str:
        """The canonical JSON text stored and handed to the channel."""
        return json.dumps({"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}},
                          sort_keys=True)


@dataclass(frozen=True)
class Device:
    """One device of a customer on a push channel.

    Attributes:
        device_id: `device_id` of the registration: opaque, stable, safe for logs and the ledger.
        address: the FCM registration token, or the Web Push subscription's JSON (`WebPushSubscription.to_json`).
        platform: what registered it (``android``, ``ios``, ``web``), "" when not said.
    """

    device_id: str
    address: str
    platform: str = ""


@dataclass(frozen=True)
class DeviceChange:
    """One registration or removal of a customer's device (a ``DeviceRegistered``/``DeviceUnregistered`` event).

    Attributes:
        customer_id: whose device.
        channel: ``push`` or ``webpush``.
        device: the device, normalised (`normalised_device`); a removal needs only its ``device_id``.
        registered: True to add (or refresh) it, False to remove it.
    """

    customer_id: str
    channel: str
    device: Device
    registered: bool = True


def device_key(channel: str, address: str) -> str:
    """What identifies a registration: the FCM token, or a subscription's endpoint (its keys may rotate)."""
    if channel == ChannelName.WEBPUSH:
        return WebPushSubscription.parse(address).endpoint
    token = address.strip()
    if not token:
        raise InvalidDevice("a push token must not be empty")
    return token


def device_id(channel: str, address: str) -> str:
    """The opaque id (hex, 32 characters) of a registration on ``channel``; raises `InvalidDevice`."""
    digest = hashlib.sha256(_PREFIX + channel.encode() + b"\x00" + device_key(channel, address).encode())
    return digest.hexdigest()[:32]


def normalised_device(channel: str, address: str, platform: str = "") -> Device:
    """A registration checked and in its stored form; raises `InvalidDevice`."""
    stored = WebPushSubscription.parse(address).to_json() if channel == ChannelName.WEBPUSH else address.strip()
    return Device(device_id(channel, stored), stored, platform)


class DeviceDirectory(Protocol):
    """Where the send activity reads a customer's devices, and drops one the provider reports gone."""

    async def devices(self, customer_id: str, channel: str) -> Sequence[Device]:
        """The customer's devices on ``channel``, oldest registration first."""
        ...

    async def remove_device(self, customer_id: str, channel: str, device_id: str) -> bool:
        """Forgets one device; True when it was registered."""
        ...


class DeviceState(StrEnum):
    """What the ledger knows of one device's call within a send."""

    #: The call was marked and nothing recorded after: it may have reached the provider.
    CALLED = "called"
    DELIVERED = "delivered"
    #: The provider refused it and retrying cannot help (gone, invalid); not called again.
    FAILED = "failed"
    #: The provider refused it for now (5xx, 429, timeout before sending): the next attempt calls again.
    RETRYING = "retrying"


@runtime_checkable
class DeviceLedger(Protocol):
    """Per-device call marks within one reserved send, fenced by the send's lease."""

    async def device_states(self, idempotency_key: str) -> Mapping[str, DeviceState]:
        """Each device's state in the send, by device id (devices never called are absent)."""
        ...

    async def mark_device_calling(self, idempotency_key: str, attempt: int, device_id: str) -> bool:
        """Records that ``attempt`` is about to call ``device_id``; False when it no longer holds the send's lease."""
        ...

    async def complete_device(self, idempotency_key: str, device_id: str, state: DeviceState,
                              provider_message_id: str | None = None) -> None:
        """Records what came of one device's call."""
        ...


@dataclass(frozen=True)
class PushParts:
    """A push variant's parts besides the body, rendered: title, deep link and data."""

    title: str
    link: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


def push_variant(notification: SendNotificationInput) -> Mapping[str, Any]:
    """The variant the notification was rendered in (the locale `activities.contact` chose)."""
    variant = notification.variants.get(notification.locale) or notification.variants.get(
        notification.default_locale) or {}
    return variant


async def render_push_parts(notification: SendNotificationInput) -> PushParts:
    """Renders title, link and data of the notification's variant in one trip off the event loop; raises
    `TemplateRenderError`.

    The title falls back to ``subject_template`` (a variant written for email reused on push).
    """
    variant = push_variant(notification)
    title_source = str(variant.get("title") or notification.subject_template or "")
    link_source = str(variant.get("link") or "")
    data_sources = {str(name): str(source) for name, source in dict(variant.get("data") or {}).items()}
    sources = [source for source in (title_source, link_source) if source] + list(data_sources.values())
    rendered = iter(await render_parts_async(notification.template_id, [RenderPart(source) for source in sources],
                                             notification.context))
    title = next(rendered) if title_source else ""
    link = next(rendered).strip() if link_source else ""
    data = {name: next(rendered) for name in data_sources}
    return PushParts(title.strip(), link, data)
