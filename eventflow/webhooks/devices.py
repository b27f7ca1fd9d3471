"""The device API of ``eventflow webhooks``: apps and browsers register and remove a customer's push devices.

``POST /customers/{customer_id}/devices`` registers one (again: refreshes its token or keys) and
answers 200 with its ``device_id``; ``DELETE`` with the same body removes it and answers 204
whether or not it was registered, so both are safe to retry. The body is JSON:
``{"channel": "push", "token": "<FCM registration token>", "platform": "android"}`` or
``{"channel": "webpush", "subscription": <PushSubscription.toJSON()>}``.

Callers are the customer's own backend, never the device itself: a request carries
``Authorization: Bearer <token>`` with one of ``EVENTFLOW_DEVICE_API_TOKENS``, compared in constant
time. Any other request — no header, a wrong token, no tokens configured — gets the same 401 before
the path's customer or the body is looked at, so it learns nothing about customers or
configuration. Writes go straight to the customer store (`store.StoreDevices`), the same rows
``DeviceRegistered`` events write.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import unquote

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from activities.push import DeviceChange, InvalidDevice, normalised_device
from core.vocabulary import ChannelName
from store import CustomerStore, StoreDevices

log = structlog.get_logger(__name__)

#: Path segments of the device API: ``/customers/{customer_id}/devices``.
CUSTOMERS_SEGMENT = "customers"
DEVICES_SEGMENT = "devices"
#: The longest customer id the API accepts (the Kafka key upstream, never this long in practice).
_MAX_CUSTOMER_ID_CHARS = 256
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="eventflow-devices"'}


class DeviceResult(StrEnum):
    """The ``result`` label of a device API request."""

    REGISTERED = "registered"
    REMOVED = "removed"
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    FORGOTTEN = "forgotten"
    NOT_ALLOWED = "method_not_allowed"


class DeviceRequest(BaseModel):
    """The JSON body of a device API request, parsed before anything is checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Literal["push", "webpush"]
    token: str | None = Field(None, max_length=4096)
    subscription: dict[str, Any] | None = None
    platform: str = Field("", max_length=32, pattern=r"^[a-z0-9_-]*$")

    def address(self) -> str:
        """The token (``push``) or the subscription's JSON (``webpush``); raises `InvalidDevice`."""
        match self.channel:
            case ChannelName.PUSH:
                if not self.token or self.subscription is not None:
                    raise InvalidDevice("a push device needs its FCM registration token as `token` (and no subscription)")
                return self.token
            case _:
                if self.subscription is None or self.token is not None:
                    raise InvalidDevice("a webpush device needs the browser's PushSubscription as `subscription`")
                return json.dumps(self.subscription)


@dataclass(frozen=True)
class DeviceAnswer:
    """What the API answered, and the metrics label for it."""

    result: DeviceResult
    response: web.Response


def device_path(raw_parts: Sequence[str]) -> str | None:
    """The customer id of a ``/customers/{id}/devices`` path (``raw_parts`` still percent-encoded); else None."""
    parts = [part for part in raw_parts if part != "/"]
    if len(parts) != 3 or parts[0] != CUSTOMERS_SEGMENT or parts[2] != DEVICES_SEGMENT:
        return None
    return unquote(parts[1])


class DeviceApi:
    """Serves the device API on the customer store.

    Args:
        devices: where devices are written.
        customers: where tombstones are checked (a forgotten customer gets no device until an identify event).
        tokens: the accepted bearer tokens; none refuses every request.
    """

    def __init__(self, devices: StoreDevices, customers: CustomerStore, tokens: Sequence[str]) -> None:
        self._devices = devices
        self._customers = customers
        self._tokens = tuple(token.encode() for token in tokens)

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries one of the tokens (each compared in constant time)."""
        scheme, _, presented = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        offered = presented.strip().encode()
        # Every token is compared, so the time taken does not tell which (or whether one) matched.
        return any([hmac.compare_digest(offered, token) for token in self._tokens])

    async def serve(self, method: str, customer_id: str, body: bytes) -> DeviceAnswer:
        """Answers one request to ``/customers/{customer_id}/devices`` that `authorised` let through."""
        if method not in ("POST", "DELETE"):
            return DeviceAnswer(DeviceResult.NOT_ALLOWED, web.Response(status=405, text="method not allowed\n",
                                                                       headers={"Allow": "POST, DELETE"}))
        if not customer_id or len(customer_id) > _MAX_CUSTOMER_ID_CHARS:
            return _malformed("the customer id must be 1 to 256 characters")
        try:
            request = DeviceRequest.model_validate_json(body)
            device = normalised_device(request.channel, request.address(), request.platform)
        except ValidationError as exc:
            # Field names and error kinds only: pydantic's own message would echo the token.
            return _malformed("; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['type']}"
                                        for error in exc.errors(include_input=False)))
        except InvalidDevice as exc:
            return _malformed(str(exc))
        if await self._customers.forgotten([customer_id]):
            return DeviceAnswer(DeviceResult.FORGOTTEN, web.Response(
                status=409, text="the customer was forgotten; an identify event for them ends that\n"))
        registered = method == "POST"
        await self._devices.apply_changes([DeviceChange(customer_id, request.channel, device, registered)])
        log.info("device_registered" if registered else "device_removed", channel=request.channel,
                 device_id=device.device_id, source="api")
        if not registered:
            return DeviceAnswer(DeviceResult.REMOVED, web.Response(status=204))
        return DeviceAnswer(DeviceResult.REGISTERED, web.json_response(
            {"channel": request.channel, "device_id": device.device_id}))


def unauthorized() -> DeviceAnswer:
    """The one answer to every request without a valid token (whatever else is wrong with it)."""
    return DeviceAnswer(DeviceResult.UNAUTHORIZED,
                        web.Response(status=401, text="unauthorized\n", headers=_UNAUTHORIZED_HEADERS))


def _malformed(problem: str) -> DeviceAnswer:
    return DeviceAnswer(DeviceResult.MALFORMED, web.Response(status=400, text=f"{problem}\n"))
