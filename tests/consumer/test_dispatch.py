"""The dispatcher's built-in routes without Temporal: what the store and the segments are handed."""

from __future__ import annotations

from typing import cast

from temporalio.client import Client

from activities.push import DeviceChange
from consumer.dispatch import Dispatcher, Outcome
from consumer.routes import ChangeDevice, EventRoutes, ObserveSegments, SegmentRoutes
from events.model import Customer, CustomerEvent
from store.journey_instances import JourneyEntry
from workflows.profile import ProfileUpdate

TOKEN = "fcm-registration-token-of-one-phone"


class _Customers:
    """A customer store that keeps what it is handed (nobody forgotten)."""

    indexes_journeys = True

    def __init__(self) -> None:
        self.devices: list[DeviceChange] = []

    async def forgotten(self, customer_id: str) -> bool:
        return False

    async def enter_journey(self, entry: JourneyEntry) -> bool:
        raise AssertionError("a device event starts no journey")

    async def lift(self, customer_id: str, occurred_at: str) -> bool:
        return True

    async def write_profile(self, customer_id: str, update: ProfileUpdate | None) -> bool:
        raise AssertionError("a device event carries no profile")

    async def change_subscription(self, event: CustomerEvent) -> None:
        raise AssertionError("a device event is no subscription change")

    async def change_device(self, change: DeviceChange) -> None:
        self.devices.append(change)


class _DeviceReadingSegments:
    """Segments that read device events (as a live catalog's set would)."""

    event_types = frozenset({"DeviceRegistered"})

    def reads(self, event_type: str) -> bool:
        return event_type in self.event_types


class _Segments:
    def __init__(self) -> None:
        self.observed: list[CustomerEvent] = []

    async def observe(self, event: CustomerEvent) -> None:
        self.observed.append(event)


async def test_segments_reading_device_events_never_get_the_token_the_device_list_does() -> None:
    event = CustomerEvent(event_id="e-1", event_type="DeviceRegistered", occurred_at="2026-11-25T10:00:00+00:00",
                          customer=Customer(id="c-1"), payload={"channel": "PUSH", "address": TOKEN,
                                                                 "platform": "android"})
    routes = SegmentRoutes(EventRoutes([]), _DeviceReadingSegments())
    customers, segments = _Customers(), _Segments()
    # No Temporal call on these routes: the client is never used.
    dispatcher = Dispatcher(cast(Client, None), "unused", customers, segments)

    actions = routes.route(event)
    outcomes = [await dispatcher.apply(event, action) for action in actions]

    assert [type(action) for action in actions] == [ChangeDevice, ObserveSegments]
    assert outcomes == [Outcome.DEVICES_UPDATED, Outcome.SEGMENTS_OBSERVED]
    assert [change.device.address for change in customers.devices] == [TOKEN]
    (observed,) = segments.observed
    assert observed.payload == {"channel": "PUSH", "platform": "android"}
