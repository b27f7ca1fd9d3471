"""Applies routed actions to Temporal: start a journey, or signal a running one.

"Already started" is success (counted as a dedupe) and a signal to a journey that does not run
is success too (nobody was waiting). Transient server errors are raised as `TransientTemporalError`
for the caller's retry loop; anything else is a bug and propagates.

Journeys get the event without contact details (`workflows.profile.journey_event`); the profile
update that carries them goes to the customer's preferences workflow, a device registration to the
customer store (`ChangeDevice`; without a store it is dead-lettered). While a forgotten customer's
tombstone runs, nothing is started or recorded for that customer (`Outcome.FORGOTTEN`) until an
identify event ends it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.push import DeviceChange
from consumer.routes import (
    ChangeDevice,
    ObserveSegments,
    Route,
    UpdatePreferences,
    UpdateProfile,
    without_device_address,
)
from consumer.tombstones import Tombstones
from core.errors import EventflowError
from events.model import CustomerEvent
from journeys.routing import SignalJourney, StartJourney
from store.errors import DevicesNotStoredError
from store.journey_instances import JourneyEntry
from workflows.journey import EVENT_SIGNAL, JOURNEY_WORKFLOW, JourneyInput
from workflows.preferences_client import record_profile_update, record_subscription_change
from workflows.profile import ProfileUpdate, journey_event, profile_update_of

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
JOURNEY_ID = SearchAttributeKey.for_keyword("JourneyId")
JOURNEY_VERSION = SearchAttributeKey.for_int("JourneyVersion")

_TRANSIENT = frozenset({
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.ABORTED,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.CANCELLED,
})


class TransientTemporalError(EventflowError):
    """Temporal could not be reached or was overloaded; retry, never dead-letter."""

    def __init__(self, operation: str, workflow_id: str, cause: RPCError) -> None:
        super().__init__(f"{operation} {workflow_id}: {cause.status.name} {cause.message}")
        self.operation = operation
        self.workflow_id = workflow_id
        self.status = cause.status


class Outcome(StrEnum):
    STARTED = "started"
    DEDUPED = "deduped"
    SIGNALLED = "signalled"
    NO_INSTANCE = "no_instance"
    PREFERENCES_UPDATED = "preferences_updated"
    #: A push device was added to or removed from the customer store.
    DEVICES_UPDATED = "devices_updated"
    #: The customer was forgotten (``eventflow customers forget``): nothing started, nothing recorded.
    FORGOTTEN = "forgotten"
    #: The customer's segments were re-evaluated (the event recorded if a segment reads its type).
    SEGMENTS_OBSERVED = "segments_observed"


class CustomerState(Protocol):
    """Where the consumer checks tombstones and writes profiles and consent: the customer store
    (`store.CustomerBatcher`, batched per moment) or, before it, per-customer Temporal workflows."""

    #: Whether `enter_journey` records the instance where ``customers forget`` and ``journeys status``
    #: look; if not, journeys start with search attributes and are found through visibility.
    indexes_journeys: bool

    async def forgotten(self, customer_id: str) -> bool: ...

    async def enter_journey(self, entry: JourneyEntry) -> bool:
        """Before a start: False when the customer is forgotten (do not start), else True."""
        ...

    async def lift(self, customer_id: str, occurred_at: str) -> bool:
        """Ends the customer's tombstone for an identify event; False when the customer was forgotten after
        the event occurred (a replayed old record), so it stays forgotten."""
        ...

    async def write_profile(self, customer_id: str, update: ProfileUpdate | None) -> bool:
        """Writes the update (None: nothing to write) unless the customer is forgotten; False (nothing
        written) when forgotten."""
        ...

    async def change_subscription(self, event: CustomerEvent) -> None: ...

    async def change_device(self, change: DeviceChange) -> None:
        """Adds or removes one push device; raises `store.errors.DevicesNotStoredError` without a store."""
        ...


class SegmentObserver(Protocol):
    """Where segment membership is kept (`store.SegmentBatcher`)."""

    async def observe(self, event: CustomerEvent) -> None: ...


class TemporalCustomerState:
    """Customer state in ``CustomerPreferences`` and ``CustomerTombstone`` workflows (the pre-store layout)."""

    indexes_journeys = False

    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue
        self._tombstones = Tombstones(client)

    async def forgotten(self, customer_id: str) -> bool:
        return await self._tombstones.forgotten_id(customer_id)

    async def enter_journey(self, entry: JourneyEntry) -> bool:
        return not await self.forgotten(entry.customer_id)

    async def lift(self, customer_id: str, occurred_at: str) -> bool:
        return await self._tombstones.lift_id(customer_id, occurred_at)

    async def write_profile(self, customer_id: str, update: ProfileUpdate | None) -> bool:
        if await self.forgotten(customer_id):
            return False
        if update is not None:
            await record_profile_update(self._client, customer_id, update, self._task_queue)
        return True

    async def change_subscription(self, event: CustomerEvent) -> None:
        await record_subscription_change(self._client, event, self._task_queue)

    async def change_device(self, change: DeviceChange) -> None:
        # Devices live only in the store: dead-lettered here, they can be replayed once there is one.
        raise DevicesNotStoredError()


class Dispatcher:
    """Turns `Action`s into Temporal calls on one client, and customer state into the store's writes."""

    def __init__(self, client: Client, task_queue: str, customers: CustomerState | None = None,
                 segments: SegmentObserver | None = None) -> None:
        self._client = client
        self._task_queue = task_queue
        self._customers = customers if customers is not None else TemporalCustomerState(client, task_queue)
        self._segments = segments

    async def apply(self, event: CustomerEvent, action: Route) -> Outcome:
        """Applies one action; transient server errors become `TransientTemporalError`, others propagate."""
        try:
            match action:
                case StartJourney():
                    entry = JourneyEntry(action.workflow_id, action.journey_id, int(action.snapshot["version"]),
                                         event.customer.id)
                    if not await self._customers.enter_journey(entry):
                        return Outcome.FORGOTTEN
                    return await self._start(journey_event(without_device_address(event)), action, entry)
                case UpdateProfile():
                    return await self._update_profile(event, action)
                case UpdatePreferences():
                    await self._customers.change_subscription(event)
                    return Outcome.PREFERENCES_UPDATED
                case ChangeDevice(change=change):
                    if await self._customers.forgotten(event.customer.id):
                        return Outcome.FORGOTTEN
                    await self._customers.change_device(change)
                    return Outcome.DEVICES_UPDATED
                case ObserveSegments():
                    if self._segments is not None:
                        # Segments read events, never a device's token (it stays in the sealed device list).
                        # A forgotten customer's event is dropped by the observation's own transaction.
                        await self._segments.observe(without_device_address(event))
                    return Outcome.SEGMENTS_OBSERVED
                case SignalJourney():
                    return await self._signal(journey_event(without_device_address(event)), action)
        except RPCError as exc:
            if exc.status in _TRANSIENT:
                raise TransientTemporalError(type(action).__name__, action.workflow_id, exc) from exc
            raise

    async def _update_profile(self, event: CustomerEvent, action: UpdateProfile) -> Outcome:
        if action.identify and not await self._customers.lift(event.customer.id, event.occurred_at):
            return Outcome.FORGOTTEN
        # The tombstone check is in the write's statement (a lifted tombstone is gone by then).
        if not await self._customers.write_profile(event.customer.id, profile_update_of(event)):
            return Outcome.FORGOTTEN
        return Outcome.PREFERENCES_UPDATED

    async def _start(self, event: CustomerEvent, action: StartJourney, entry: JourneyEntry) -> Outcome:
        try:
            await self._client.start_workflow(
                JOURNEY_WORKFLOW,
                JourneyInput.starting(action.snapshot, event),
                id=action.workflow_id,
                task_queue=self._task_queue,
                id_reuse_policy=(WorkflowIDReusePolicy.REJECT_DUPLICATE if action.reject_reuse
                                 else WorkflowIDReusePolicy.ALLOW_DUPLICATE),
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                # With a store the instance is recorded there (`enter_journey`): search attributes made
                # the start cost the server's visibility store a fifth of its throughput.
                search_attributes=None if self._customers.indexes_journeys else TypedSearchAttributes([
                    SearchAttributePair(CUSTOMER_ID, entry.customer_id),
                    SearchAttributePair(JOURNEY_ID, entry.journey_id),
                    SearchAttributePair(JOURNEY_VERSION, entry.journey_version),
                ]),
            )
        except WorkflowAlreadyStartedError:
            return Outcome.DEDUPED
        return Outcome.STARTED

    async def _signal(self, event: CustomerEvent, action: SignalJourney) -> Outcome:
        try:
            await self._client.get_workflow_handle(action.workflow_id).signal(EVENT_SIGNAL, event)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return Outcome.NO_INSTANCE
            raise
        return Outcome.SIGNALLED
