"""The client side of ``CustomerPreferences``: the delivery ledger the send activity uses, and the calls
the consumer and the CLI make. Kept out of the workflow module so workflow code imports no client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.contact import ContactPoints
from activities.ledger import Completion, Reservation, ReserveRequest
from events.model import CustomerEvent
from workflows.preferences import (
    SEND_COMPLETED_SIGNAL,
    SUBSCRIPTION_CHANGED_SIGNAL,
    CustomerPreferences,
    PreferencesInput,
    preferences_workflow_id,
)
from workflows.profile import PROFILE_UPDATED_SIGNAL, ProfileUpdate


class PreferencesStore:
    """The `activities.ledger.DeliveryLedger` backed by ``CustomerPreferences`` workflows.

    A reservation is one Update-with-Start (the customer's workflow is started on first use); a
    completion is one signal-with-start, which returns once the server has stored it, without
    waiting for the workflow to run. An Update that times out is asked again under the same
    update id, which the server deduplicates, so a slow ledger never applies one request twice.

    Temporal admits a bounded number of in-flight Updates per workflow (10 by default), so this
    process sends at most ``max_updates_per_customer`` at once to one customer and backs off when
    the server still says the limit is reached (other replicas share it).
    """

    def __init__(self, client: Client, task_queue: str, *, max_updates_per_customer: int = 4,
                 update_rpc_timeout_seconds: float = 10.0, give_up_after_seconds: float = 120.0) -> None:
        self._client = client
        self._task_queue = task_queue
        self._gates = _KeyedGates(max_updates_per_customer)
        self._rpc_timeout = timedelta(seconds=update_rpc_timeout_seconds)
        # Past this the error goes to the activity's retry policy, so an outage is not waited out forever.
        self._give_up_after = give_up_after_seconds
        #: Reservations asked again, by reason (``rpc_timeout``, ``server_busy``): a worker reads
        #: these into its metrics, and tests assert on them.
        self.retries: collections.Counter[str] = collections.Counter()

    def _start_operation(self, customer_id: str) -> WithStartWorkflowOperation[CustomerPreferences, None]:
        return WithStartWorkflowOperation(
            CustomerPreferences.run, PreferencesInput(customer_id), id=preferences_workflow_id(customer_id),
            task_queue=self._task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)

    async def reserve(self, request: ReserveRequest) -> Reservation:
        update_id = f"reserve/{request.idempotency_key}/{request.attempt}/{request.now_epoch_seconds!r}"
        async with self._gates.hold(request.customer_id):
            backoff = _Backoff()
            deadline = time.monotonic() + self._give_up_after
            while True:
                try:
                    return await self._reserve_once(request, update_id)
                except WorkflowUpdateRPCTimeoutOrCancelledError as err:
                    if isinstance(err.__cause__, asyncio.CancelledError) or _being_cancelled():
                        # The SDK reports our own cancellation (the activity was cancelled, the
                        # worker is stopping) with the same error as a timeout: stop, do not retry.
                        raise asyncio.CancelledError from err
                    self.retries["rpc_timeout"] += 1  # asked again under the same id: applied once
                except RPCError as err:
                    if err.status not in _BACK_OFF_STATUSES or time.monotonic() > deadline:
                        raise
                    self.retries["server_busy"] += 1
                except WorkflowUpdateFailedError as err:
                    if not _is_transient_update_failure(err) or time.monotonic() > deadline:
                        raise
                    self.retries["server_busy"] += 1
                await backoff.sleep()

    async def _reserve_once(self, request: ReserveRequest, update_id: str) -> Reservation:
        operation = self._start_operation(request.customer_id)
        try:
            result: Reservation = await self._client.execute_update_with_start_workflow(
                CustomerPreferences.reserve_send, request, start_workflow_operation=operation, id=update_id,
                rpc_timeout=self._rpc_timeout)
        except BaseException:
            _read_failed_start(operation)
            raise
        return result

    async def complete(self, completion: Completion) -> None:
        await self._client.start_workflow(
            CustomerPreferences.run, PreferencesInput(completion.customer_id),
            id=preferences_workflow_id(completion.customer_id), task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=SEND_COMPLETED_SIGNAL, start_signal_args=[completion])


#: The server is busy or the workflow's in-flight Update limit is reached: ask again after a pause.
_BACK_OFF_STATUSES = frozenset({RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE,
                                RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.ABORTED})


def _read_failed_start(operation: WithStartWorkflowOperation[CustomerPreferences, None]) -> None:
    """Reads the start's outcome off an operation whose update call failed, and drops it.

    The SDK sets a failed start's error on the operation's workflow handle as well as raising it
    from the update call. The caller owns the raised one (it retries, backs off or gives up); read
    unasked, the other was logged as "Future exception was never retrieved", once per timed-out
    reservation (issue 23). Once the call has raised, the handle is settled, or never will be (the
    call failed before a start was sent): a read still waiting one loop turn later is cancelled.
    """
    reading = asyncio.ensure_future(operation.workflow_handle())
    reading.add_done_callback(_drop_outcome)
    asyncio.get_running_loop().call_soon(reading.cancel)


def _drop_outcome(reading: asyncio.Future[Any]) -> None:
    if not reading.cancelled():
        reading.exception()  # the same error the update call raised to its caller


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _is_transient_update_failure(err: WorkflowUpdateFailedError) -> bool:
    # Update-with-Start surfaces a rejected start or update as a failure whose cause is the RPC error.
    cause = err.cause
    return isinstance(cause, RPCError) and cause.status in _BACK_OFF_STATUSES


class _Backoff:
    """Capped exponential back-off with full jitter."""

    def __init__(self, first_seconds: float = 0.05, cap_seconds: float = 2.0) -> None:
        self._next = first_seconds
        self._cap = cap_seconds

    async def sleep(self) -> None:
        await asyncio.sleep(random.uniform(0, self._next))
        self._next = min(self._cap, self._next * 2)


class _KeyedGates:
    """At most ``limit`` holders per key at once; a key's gate is dropped when nobody holds or waits."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        gate, users = self._gates.setdefault(key, (asyncio.Semaphore(self._limit), [0]))
        users[0] += 1
        try:
            async with gate:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._gates[key]


async def record_subscription_change(client: Client, event: CustomerEvent, task_queue: str) -> None:
    """Routes a ``SubscriptionChanged`` event to the customer's preferences (signal-with-start; idempotent)."""
    await client.start_workflow(
        CustomerPreferences.run, PreferencesInput(event.customer.id),
        id=preferences_workflow_id(event.customer.id), task_queue=task_queue,
        start_signal=SUBSCRIPTION_CHANGED_SIGNAL, start_signal_args=[event])


async def preferences_state(client: Client, customer_id: str, *,
                            rpc_timeout: timedelta | None = None) -> PreferencesInput:
    """The customer's current preferences and ledger (the ``state`` query; a worker answers it, within
    ``rpc_timeout`` when given)."""
    return await client.get_workflow_handle(preferences_workflow_id(customer_id)).query(
        CustomerPreferences.state, rpc_timeout=rpc_timeout)


async def record_profile_update(client: Client, customer_id: str, update: ProfileUpdate, task_queue: str) -> None:
    """Routes an event's profile data to the customer's preferences workflow (signal-with-start; idempotent)."""
    await client.start_workflow(
        CustomerPreferences.run, PreferencesInput(customer_id),
        id=preferences_workflow_id(customer_id), task_queue=task_queue,
        start_signal=PROFILE_UPDATED_SIGNAL, start_signal_args=[update])


class ProfileDirectory:
    """The `activities.contact.ContactDirectory` backed by the ``contact_points`` query of ``CustomerPreferences``.

    A query writes nothing to any history; a customer without a preferences workflow has no profile.
    """

    def __init__(self, client: Client, *, rpc_timeout_seconds: float = 10.0) -> None:
        self._client = client
        # A worker too busy to answer fails this attempt, and the send activity's retry policy asks again.
        self._rpc_timeout = timedelta(seconds=rpc_timeout_seconds)

    async def contact_points(self, customer_id: str) -> ContactPoints:
        handle = self._client.get_workflow_handle(preferences_workflow_id(customer_id))
        try:
            return await handle.query(CustomerPreferences.contact_points, rpc_timeout=self._rpc_timeout)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return ContactPoints()
            raise
