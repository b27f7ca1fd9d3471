"""Per-customer preferences and delivery ledger, kept in Temporal as one long-lived workflow per customer.

``CustomerPreferences`` (workflow id ``preferences:{customer_id}``) holds the customer's per-channel
opt-outs and a ledger of recent sends keyed by idempotency key. Every worker replica reaches it
through the same Temporal server, so the state is durable and shared without another store:

* the consumer routes ``SubscriptionChanged`` events to it with signal-with-start
  (`record_subscription_change`);
* the send activity calls the ``reserve_send`` Update before a provider call (opt-out, quiet
  hours, frequency cap and "already delivered?" in one atomic step, since one workflow handles
  one update at a time) and the ``complete_send`` Update after it (`PreferencesStore`).

Workflows cannot send Updates to other workflows, so the Update calls are made by the send
activity through the client. The history stays bounded: the workflow continues as new after
`MAX_CHANGES_PER_RUN` changes (or when Temporal suggests it), carrying only recent ledger entries.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from activities.ledger import Completion, Reservation, ReserveRequest
    from events.model import CustomerEvent
    from workflows._calendar import local_day, next_local_midnight, quiet_window_end

T = TypeVar("T")

PREFERENCES_WORKFLOW = "CustomerPreferences"
SUBSCRIPTION_CHANGED_SIGNAL = "subscription_changed"
RESERVE_SEND_UPDATE = "reserve_send"
COMPLETE_SEND_UPDATE = "complete_send"
STATE_QUERY = "state"

#: Changes (signals and updates) per run before continuing as new.
MAX_CHANGES_PER_RUN = 500
#: Ledger entries older than this are dropped at continue-as-new (journey retries end long before).
LEDGER_RETENTION = timedelta(days=35)
_SEEN_EVENT_IDS_KEPT = 200
#: Ledger states that occupy a frequency-cap slot (a permanent failure frees it).
_COUNTED_STATES = frozenset({"in_flight", "retrying", "uncertain", "delivered"})


def preferences_workflow_id(customer_id: str) -> str:
    """The workflow id of a customer's preferences."""
    return f"preferences:{customer_id}"


@dataclass(frozen=True)
class ChannelPreference:
    """The latest subscription state of one channel."""

    subscribed: bool
    changed_at: str
    source: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    """One notification's delivery state.

    Attributes:
        state: ``in_flight`` (an attempt started), ``retrying`` (the provider refused, retryable),
            ``uncertain`` (timed out), ``delivered``, or ``failed:<ErrorType>``.
        local_day: the customer's calendar day (their timezone) when the send was reserved.
        reserved_at: workflow time of the reservation (ISO 8601 UTC).
        started_epoch_seconds: wall-clock start of the latest attempt.
    """

    channel: str
    state: str
    local_day: str
    reserved_at: str
    attempts: int = 1
    started_epoch_seconds: float = 0.0
    provider: str = ""
    provider_message_id: str | None = None


@dataclass(frozen=True)
class PreferencesInput:
    """Start input; on continue-as-new it carries the state forward."""

    customer_id: str
    channels: dict[str, ChannelPreference] = field(default_factory=dict)
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    seen_event_ids: list[str] = field(default_factory=list)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


@workflow.defn(name=PREFERENCES_WORKFLOW)
class CustomerPreferences:
    """One customer's opt-outs and recent sends; the single writer of both."""

    def __init__(self) -> None:
        self._customer_id = ""
        self._channels: dict[str, ChannelPreference] = {}
        self._ledger: dict[str, LedgerEntry] = {}
        self._seen_event_ids: list[str] = []
        self._changes = 0

    @workflow.run
    async def run(self, start: PreferencesInput) -> None:
        self._customer_id = start.customer_id
        # Signals delivered with the start may already have run; keep what they changed.
        self._channels = {**start.channels, **self._channels}
        self._ledger = {**start.ledger, **self._ledger}
        self._seen_event_ids = [*start.seen_event_ids, *self._seen_event_ids][-_SEEN_EVENT_IDS_KEPT:]
        await workflow.wait_condition(
            lambda: self._changes >= MAX_CHANGES_PER_RUN or workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._carry_over())

    def _carry_over(self) -> PreferencesInput:
        cutoff = workflow.now() - LEDGER_RETENTION
        ledger = {key: entry for key, entry in self._ledger.items()
                  if datetime.fromisoformat(entry.reserved_at) >= cutoff}
        return PreferencesInput(self._customer_id, dict(self._channels), ledger,
                                self._seen_event_ids[-_SEEN_EVENT_IDS_KEPT:])

    @workflow.query(name=STATE_QUERY)
    def state(self) -> PreferencesInput:
        """The current opt-outs and ledger."""
        return PreferencesInput(self._customer_id, dict(self._channels), dict(self._ledger),
                                list(self._seen_event_ids))

    @workflow.signal(name=SUBSCRIPTION_CHANGED_SIGNAL)
    def subscription_changed(self, event: CustomerEvent) -> None:
        """Applies a ``SubscriptionChanged`` event; redeliveries and out-of-order older events are ignored."""
        if event.event_id in self._seen_event_ids:
            return
        self._seen_event_ids.append(event.event_id)
        self._changes += 1
        channel = str(event.payload.get("channel", "")).lower()
        if not channel:
            workflow.logger.warning("subscription change without a channel event_id=%s", event.event_id)
            return
        current = self._channels.get(channel)
        if current is not None and _instant(current.changed_at) > _instant(event.occurred_at):
            return
        self._channels[channel] = ChannelPreference(bool(event.payload.get("subscribed")), event.occurred_at,
                                                    str(event.payload.get("source") or ""))

    @workflow.update(name=RESERVE_SEND_UPDATE)
    def reserve_send(self, request: ReserveRequest) -> Reservation:
        """Decides whether one notification may go to the provider now, and records the attempt if so."""
        self._changes += 1
        now = workflow.now()
        entry = self._ledger.get(request.idempotency_key)
        if entry is not None and entry.state == "delivered":
            return Reservation("delivered", provider=entry.provider, provider_message_id=entry.provider_message_id)
        preference = self._channels.get(request.channel)
        if preference is not None and not preference.subscribed:
            return Reservation("opted_out")
        if entry is not None and not entry.state.startswith("failed:"):
            # A retry of a reserved send: quiet hours and the cap were checked when it was reserved.
            uncertain = entry.state in ("in_flight", "uncertain")
            previous = entry.started_epoch_seconds
            self._ledger[request.idempotency_key] = replace(
                entry, state="in_flight", attempts=entry.attempts + 1, started_epoch_seconds=request.now_epoch_seconds)
            return Reservation("send", previous_attempt_uncertain=uncertain, previous_started_epoch_seconds=previous)
        quiet_end = quiet_window_end(now, request.timezone, request.quiet_hours)
        if quiet_end is not None:
            return Reservation("defer", not_before=_iso(quiet_end))
        today = local_day(now, request.timezone)
        if request.daily_cap > 0:
            used = sum(1 for e in self._ledger.values()
                       if e.channel == request.channel and e.local_day == today and e.state in _COUNTED_STATES)
            if used >= request.daily_cap:
                if request.on_cap == "defer":
                    return Reservation("defer", not_before=_iso(next_local_midnight(now, request.timezone)))
                return Reservation("capped")
        self._ledger[request.idempotency_key] = LedgerEntry(
            channel=request.channel, state="in_flight", local_day=today, reserved_at=_iso(now),
            started_epoch_seconds=request.now_epoch_seconds)
        return Reservation("send")

    @workflow.update(name=COMPLETE_SEND_UPDATE)
    def complete_send(self, completion: Completion) -> None:
        """Records what came of a reserved send; a provider-reported unsubscribe becomes an opt-out."""
        self._changes += 1
        now = workflow.now()
        entry = self._ledger.get(completion.idempotency_key) or LedgerEntry(
            channel=completion.channel, state="in_flight", local_day=now.date().isoformat(), reserved_at=_iso(now))
        self._ledger[completion.idempotency_key] = replace(
            entry, state=completion.outcome, provider=completion.provider or entry.provider,
            provider_message_id=completion.provider_message_id or entry.provider_message_id)
        if completion.outcome == "failed:RecipientUnsubscribed":
            self._channels[completion.channel] = ChannelPreference(False, _iso(now), "provider")


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class PreferencesStore:
    """The `activities.ledger.DeliveryLedger` backed by ``CustomerPreferences`` workflows.

    The first call for a customer starts their workflow if it is not running (``USE_EXISTING``);
    later calls go straight to the Update, starting the workflow again only if the server says
    it is gone. Both steps are idempotent, so the activity may retry them freely.
    """

    def __init__(self, client: Client, task_queue: str, *, remembered_customers: int = 10_000) -> None:
        self._client = client
        self._task_queue = task_queue
        self._started: OrderedDict[str, None] = OrderedDict()
        self._remembered_customers = remembered_customers

    async def _start(self, customer_id: str) -> None:
        await self._client.start_workflow(
            CustomerPreferences.run, PreferencesInput(customer_id), id=preferences_workflow_id(customer_id),
            task_queue=self._task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        self._started[customer_id] = None
        self._started.move_to_end(customer_id)
        while len(self._started) > self._remembered_customers:
            self._started.popitem(last=False)

    async def _update(self, customer_id: str, name: str, arg: object, result_type: type[T]) -> T:
        if customer_id not in self._started:
            await self._start(customer_id)
        handle = self._client.get_workflow_handle(preferences_workflow_id(customer_id))
        try:
            return await handle.execute_update(name, arg, result_type=result_type)
        except RPCError as err:
            self._started.pop(customer_id, None)
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        await self._start(customer_id)
        return await handle.execute_update(name, arg, result_type=result_type)

    async def reserve(self, request: ReserveRequest) -> Reservation:
        return await self._update(request.customer_id, RESERVE_SEND_UPDATE, request, Reservation)

    async def complete(self, completion: Completion) -> None:
        await self._update(completion.customer_id, COMPLETE_SEND_UPDATE, completion, type(None))


async def record_subscription_change(client: Client, event: CustomerEvent, task_queue: str) -> None:
    """Routes a ``SubscriptionChanged`` event to the customer's preferences (signal-with-start; idempotent)."""
    await client.start_workflow(
        CustomerPreferences.run, PreferencesInput(event.customer.id),
        id=preferences_workflow_id(event.customer.id), task_queue=task_queue,
        start_signal=SUBSCRIPTION_CHANGED_SIGNAL, start_signal_args=[event])


async def preferences_state(client: Client, customer_id: str) -> PreferencesInput:
    """The customer's current preferences and ledger (the ``state`` query)."""
    return await client.get_workflow_handle(preferences_workflow_id(customer_id)).query(CustomerPreferences.state)
