"""Whether an event's customer was forgotten: the consumer's side of `workflows.tombstone`.

One describe of ``tombstone:{customer_id}`` per event that would start a journey or record a
profile (NOT_FOUND, the usual answer, is a read on the server that no worker takes part in). The
answer is kept for the event's other actions only: another replica may forget or identify the
customer at any time, so nothing is meant to outlive the event (an entry lasts only until 1024
later events pushed it out).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from events.model import CustomerEvent
from workflows.tombstone import tombstone_workflow_id

_ANSWERS_KEPT = 1024
_LIFTED_REASON = "identify event"


class Tombstones:
    """Asks and ends tombstones; remembers the answer for the event being dispatched."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._answers: OrderedDict[str, bool] = OrderedDict()

    async def forgotten(self, event: CustomerEvent) -> bool:
        """Whether the event's customer has a running tombstone."""
        known = self._answers.get(event.event_id)
        if known is not None:
            return known
        handle = self._client.get_workflow_handle(tombstone_workflow_id(event.customer.id))
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            answer = False
        else:
            answer = description.status is WorkflowExecutionStatus.RUNNING
        self._remember(event.event_id, answer)
        return answer

    async def forgotten_id(self, customer_id: str) -> bool:
        """Whether ``customer_id`` has a running tombstone (asked every time)."""
        handle = self._client.get_workflow_handle(tombstone_workflow_id(customer_id))
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            return False
        return description.status is WorkflowExecutionStatus.RUNNING

    async def lift_id(self, customer_id: str, occurred_at: str | None = None) -> bool:
        """Ends ``customer_id``'s tombstone, if any, for an identify event that occurred at ``occurred_at``.

        Returns False, leaving the tombstone, when the customer was forgotten after the event occurred:
        a replayed old record (a dead letter, a reset offset) must not bring a forgotten customer back.
        The forget's time is the tombstone's start (the command starts it at the forget).
        """
        handle = self._client.get_workflow_handle(tombstone_workflow_id(customer_id))
        try:
            if occurred_at is not None:
                description = await handle.describe()
                if description.status is not WorkflowExecutionStatus.RUNNING:
                    return True
                if _instant(occurred_at) <= description.start_time:
                    return False
            await handle.terminate(reason=_LIFTED_REASON)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        return True

    async def lift(self, event: CustomerEvent) -> None:
        """Ends the customer's tombstone, if any: an identify event makes the customer known again."""
        handle = self._client.get_workflow_handle(tombstone_workflow_id(event.customer.id))
        try:
            await handle.terminate(reason=_LIFTED_REASON)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        self._remember(event.event_id, False)

    def _remember(self, event_id: str, answer: bool) -> None:
        self._answers[event_id] = answer
        self._answers.move_to_end(event_id)
        while len(self._answers) > _ANSWERS_KEPT:
            self._answers.popitem(last=False)


def _instant(occurred_at: str) -> datetime:
    """``occurred_at`` as an aware instant; an unreadable time is the earliest (it lifts nothing)."""
    try:
        moment = datetime.fromisoformat(occurred_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
