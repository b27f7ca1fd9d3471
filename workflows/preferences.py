"""Per-customer preferences and delivery ledger, kept in Temporal as one long-lived workflow per customer.

``CustomerPreferences`` (workflow id ``preferences:{customer_id}``) holds the customer's per-channel
opt-outs and a ledger of recent sends keyed by idempotency key. Every worker replica reaches it
through the same Temporal server, so the state is durable and shared without another store:

* the consumer routes ``SubscriptionChanged`` events to it with signal-with-start;
* the send activity calls the ``reserve_send`` Update before a provider call (opt-out, quiet
  hours, frequency cap, "already delivered?" and the attempt's lease in one atomic step, since
  one workflow handles one update at a time) and reports the outcome with the ``send_completed``
  signal (``complete_send``, the blocking Update it replaced, is still accepted).

Workflows cannot send Updates to other workflows, so these calls are made by the send activity
through the client in `workflows.preferences_client`. The history stays bounded: the workflow continues as new after
`MAX_CHANGES_PER_RUN` changes (or when Temporal suggests it), carrying only recent ledger entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contact import ContactPoints
    from activities.ledger import Completion, Reservation, ReserveRequest
    from activities.outcomes import LedgerState, ReserveDecision
    from events.model import CustomerEvent
    from workflows import suppression as sup
    from workflows._calendar import local_day, next_local_midnight, quiet_window_end
    from workflows._caps import cap_gate
    from workflows.profile import (
        CONTACT_POINTS_QUERY,
        PROFILE_UPDATED_SIGNAL,
        CustomerProfile,
        ProfileUpdate,
        apply_update,
        merge_profiles,
    )

PREFERENCES_WORKFLOW = "CustomerPreferences"
SUBSCRIPTION_CHANGED_SIGNAL = "subscription_changed"
RESERVE_SEND_UPDATE = "reserve_send"
COMPLETE_SEND_UPDATE = "complete_send"
SEND_COMPLETED_SIGNAL = "send_completed"
STATE_QUERY = "state"

#: Changes (signals and updates) per run before continuing as new.
MAX_CHANGES_PER_RUN = 500
#: Ledger entries older than this are dropped at continue-as-new (journey retries end long before).
LEDGER_RETENTION = timedelta(days=35)
_SEEN_EVENT_IDS_KEPT = 200
#: Rolling caps per channel and across channels, with journey priority (activities/caps.py).
ROLLING_CAPS_PATCH = "rolling-caps"


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
        state: see `LedgerState`; ``failed`` carries its ``error_type``.
        local_day: the customer's calendar day (their timezone) when the send was reserved.
        reserved_at: workflow time of the reservation (ISO 8601 UTC).
        started_epoch_seconds: wall-clock start of the latest attempt.
        lease_attempt, lease_until: the activity attempt that may call the provider, and until when
            (ISO 8601 UTC, workflow time); ``""`` when no lease was granted.
        priority: the send's priority (``transactional`` sends use no cap slot); ``""`` is normal.
        outcome, outcome_at, error_code: the latest provider report (`DeliveryOutcome`, moved
            only forward, see `workflows.suppression.advance`), when it happened, the provider's code.
        reports: provider reports applied to this send (each report id once).
    """

    channel: str
    state: LedgerState
    local_day: str
    reserved_at: str
    attempts: int = 1
    started_epoch_seconds: float = 0.0
    provider: str = ""
    provider_message_id: str | None = None
    error_type: str = ""
    lease_attempt: int = 0
    lease_until: str = ""
    priority: str = ""
    outcome: str = ""
    outcome_at: str = ""
    error_code: str = ""
    reports: int = 0


@dataclass(frozen=True)
class PreferencesInput:
    """Start input; on continue-as-new it carries the state forward."""

    customer_id: str
    channels: dict[str, ChannelPreference] = field(default_factory=dict)
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    seen_event_ids: list[str] = field(default_factory=list)
    suppressions: dict[str, sup.Suppression] = field(default_factory=dict)
    seen_report_ids: list[str] = field(default_factory=list)
    #: The customer's profile (workflows/profile.py).
    profile: CustomerProfile = field(default_factory=CustomerProfile)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@workflow.defn(name=PREFERENCES_WORKFLOW)
class CustomerPreferences:
    """One customer's opt-outs and recent sends; the single writer of both."""

    def __init__(self) -> None:
        self._customer_id = ""
        self._channels: dict[str, ChannelPreference] = {}
        self._ledger: dict[str, LedgerEntry] = {}
        self._seen_event_ids: list[str] = []
        self._suppressions: dict[str, sup.Suppression] = {}
        self._seen_report_ids: list[str] = []
        self._changes = 0
        self._profile = CustomerProfile()

    @workflow.run
    async def run(self, start: PreferencesInput) -> None:
        self._customer_id = start.customer_id
        # Signals delivered with the start may already have run; keep what they changed.
        self._channels = {**start.channels, **self._channels}
        self._ledger = {**start.ledger, **self._ledger}
        self._seen_event_ids = [*start.seen_event_ids, *self._seen_event_ids][-_SEEN_EVENT_IDS_KEPT:]
        self._suppressions = {**start.suppressions, **self._suppressions}
        self._seen_report_ids = [*start.seen_report_ids, *self._seen_report_ids][-sup.REPORT_IDS_KEPT:]
        self._profile = merge_profiles(start.profile, self._profile)
        await workflow.wait_condition(
            lambda: self._changes >= MAX_CHANGES_PER_RUN or workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._carry_over())

    def _carry_over(self) -> PreferencesInput:
        cutoff = workflow.now() - LEDGER_RETENTION
        ledger = {key: entry for key, entry in self._ledger.items()
                  if datetime.fromisoformat(entry.reserved_at) >= cutoff}
        return PreferencesInput(self._customer_id, dict(self._channels), ledger,
                                self._seen_event_ids[-_SEEN_EVENT_IDS_KEPT:], dict(self._suppressions),
                                self._seen_report_ids[-sup.REPORT_IDS_KEPT:], profile=self._profile)

    @workflow.query(name=STATE_QUERY)
    def state(self) -> PreferencesInput:
        """The current opt-outs and ledger."""
        return PreferencesInput(self._customer_id, dict(self._channels), dict(self._ledger),
                                list(self._seen_event_ids), dict(self._suppressions), list(self._seen_report_ids),
                                profile=self._profile)

    @workflow.query(name=CONTACT_POINTS_QUERY)
    def contact_points(self) -> ContactPoints:
        """The profile's contact points, for the send activity (a query: nothing is written to history)."""
        return self._profile.contact_points()

    @workflow.signal(name=PROFILE_UPDATED_SIGNAL)
    def profile_updated(self, update: ProfileUpdate) -> None:
        """Folds an event's profile data in; later-occurring values win, redeliveries change nothing."""
        self._changes += 1
        self._profile = apply_update(self._profile, update)

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
        if event.payload.get("subscribed") and self._suppressions and workflow.patched(sup.SUPPRESSION_PATCH):
            # A later opt-in lifts the channel's suppressions (an earlier one does not).
            for key, suppression in list(self._suppressions.items()):
                if suppression.channel == channel and _instant(suppression.at) <= _instant(event.occurred_at):
                    del self._suppressions[key]

    @workflow.signal(name=sup.DELIVERY_REPORT_SIGNAL)
    def delivery_report(self, feedback: sup.DeliveryFeedback) -> None:
        """Applies a provider report to its send's ledger entry; suppresses the address when it says so.

        Each report id applies once (providers retry); outcomes only move forward.
        """
        report = feedback.report
        if report.report_id and report.report_id in self._seen_report_ids:
            return
        self._changes += 1
        if report.report_id:
            self._seen_report_ids = [*self._seen_report_ids, report.report_id][-sup.REPORT_IDS_KEPT:]
        entry = self._ledger.get(report.idempotency_key)
        if entry is not None:
            moved = sup.advance(entry.outcome, report.outcome)
            self._ledger[report.idempotency_key] = replace(
                entry, reports=entry.reports + 1,
                outcome=report.outcome.value if moved else entry.outcome,
                outcome_at=report.at if moved else entry.outcome_at,
                error_code=report.error_code if moved else entry.error_code,
                provider_message_id=entry.provider_message_id or report.provider_message_id or None)
        reason = sup.suppression_reason(report)
        if reason is not None:
            key = sup.suppression_key(report.channel, feedback.address_hash)
            self._suppressions[key] = sup.Suppression(report.channel, feedback.address_hash, reason,
                                                      report.at or _iso(workflow.now()), report.report_id)
            workflow.logger.info("address suppressed channel=%s reason=%s", report.channel, reason)

    @workflow.signal(name=sup.CONTACT_KEYWORD_SIGNAL)
    def contact_keyword(self, keyword: sup.ContactKeyword) -> None:
        """STOP suppresses the address on its channel; START lifts that; HELP changes nothing."""
        if keyword.report_id and keyword.report_id in self._seen_report_ids:
            return
        self._changes += 1
        if keyword.report_id:
            self._seen_report_ids = [*self._seen_report_ids, keyword.report_id][-sup.REPORT_IDS_KEPT:]
        match keyword.action:
            case sup.KeywordAction.OPT_OUT:
                self._suppressions[sup.suppression_key(keyword.channel, keyword.address_hash)] = sup.Suppression(
                    keyword.channel, keyword.address_hash, sup.SuppressionReason.STOP, keyword.at, keyword.report_id)
            case sup.KeywordAction.OPT_IN:
                sup.lift(self._suppressions, keyword.channel, keyword.address_hash, keyword.other_address_hashes)
            case sup.KeywordAction.HELP:
                pass

    @workflow.update(name=RESERVE_SEND_UPDATE)
    def reserve_send(self, request: ReserveRequest) -> Reservation:
        """Decides whether one notification may go to the provider now; if so, leases it to the asking attempt.

        One workflow applies one update at a time, so the decision and the lease are atomic across
        every worker replica.
        """
        self._changes += 1
        now = workflow.now()
        entry = self._ledger.get(request.idempotency_key)
        if entry is not None and entry.state is LedgerState.DELIVERED:
            return Reservation(ReserveDecision.DELIVERED, provider=entry.provider,
                               provider_message_id=entry.provider_message_id)
        preference = self._channels.get(request.channel)
        if preference is not None and not preference.subscribed:
            return Reservation(ReserveDecision.OPTED_OUT)
        if self._suppressions and workflow.patched(sup.SUPPRESSION_PATCH) \
                and sup.suppressed(self._suppressions, request.channel, request.address_hash,
                                  request.other_address_hashes) is not None:
            return Reservation(ReserveDecision.SUPPRESSED)
        if entry is not None and entry.state is not LedgerState.FAILED:
            return self._renew(request, entry, now)
        quiet_end = quiet_window_end(now, request.timezone, request.quiet_hours)
        if quiet_end is not None:
            return Reservation(ReserveDecision.DEFER, not_before=_iso(quiet_end))
        today = local_day(now, request.timezone)
        if workflow.patched(ROLLING_CAPS_PATCH):
            capped = cap_gate(request, self._ledger.values(), now)
            if capped is not None:
                return capped
        elif request.daily_cap > 0:
            used = sum(1 for e in self._ledger.values()
                       if e.channel == request.channel and e.local_day == today and e.state.holds_cap_slot)
            if used >= request.daily_cap:
                if request.on_cap == "defer":
                    return Reservation(ReserveDecision.DEFER, not_before=_iso(next_local_midnight(now, request.timezone)))
                return Reservation(ReserveDecision.CAPPED)
        self._ledger[request.idempotency_key] = LedgerEntry(
            channel=request.channel, state=LedgerState.IN_FLIGHT, local_day=today, reserved_at=_iso(now),
            started_epoch_seconds=request.now_epoch_seconds, lease_attempt=request.attempt,
            lease_until=_lease_until(request, now), priority=request.priority)
        return Reservation(ReserveDecision.SEND)

    def _renew(self, request: ReserveRequest, entry: LedgerEntry, now: datetime) -> Reservation:
        """A later attempt (or the same one asking again) for a send reserved before.

        Quiet hours and the cap were checked when it was first reserved. While another attempt's
        lease runs, the answer is ``busy``: that attempt may be calling the provider right now.
        """
        same_attempt = request.attempt > 0 and entry.lease_attempt == request.attempt
        if entry.state is LedgerState.IN_FLIGHT and not same_attempt and entry.lease_until \
                and now < datetime.fromisoformat(entry.lease_until):
            return Reservation(ReserveDecision.BUSY, not_before=entry.lease_until)
        uncertain = entry.state in (LedgerState.IN_FLIGHT, LedgerState.UNCERTAIN) and not same_attempt
        previous = entry.started_epoch_seconds
        self._ledger[request.idempotency_key] = replace(
            entry, state=LedgerState.IN_FLIGHT, attempts=entry.attempts + (0 if same_attempt else 1),
            started_epoch_seconds=request.now_epoch_seconds, lease_attempt=request.attempt,
            lease_until=_lease_until(request, now))
        return Reservation(ReserveDecision.SEND, previous_attempt_uncertain=uncertain,
                           previous_started_epoch_seconds=previous)

    @workflow.update(name=COMPLETE_SEND_UPDATE)
    def complete_send(self, completion: Completion) -> None:
        """Records what came of a reserved send (the blocking form, kept for callers from before the signal)."""
        self._record_completion(completion)

    @workflow.signal(name=SEND_COMPLETED_SIGNAL)
    def send_completed(self, completion: Completion) -> None:
        """Records what came of a reserved send; the sender does not wait for this workflow to run."""
        self._record_completion(completion)

    def _record_completion(self, completion: Completion) -> None:
        self._changes += 1
        now = workflow.now()
        entry = self._ledger.get(completion.idempotency_key)
        if entry is None:
            entry = LedgerEntry(channel=completion.channel, state=LedgerState.IN_FLIGHT,
                                local_day=now.date().isoformat(), reserved_at=_iso(now))
        elif entry.state is LedgerState.DELIVERED:
            return
        elif (completion.outcome is not LedgerState.DELIVERED and completion.attempt > 0
              and entry.lease_attempt > 0 and completion.attempt != entry.lease_attempt):
            # A fenced-out attempt reporting late must not release the lease a newer attempt holds.
            return
        self._ledger[completion.idempotency_key] = replace(
            entry, state=completion.outcome, error_type=completion.error_type,
            provider=completion.provider or entry.provider,
            provider_message_id=completion.provider_message_id or entry.provider_message_id,
            lease_until="" if completion.outcome is not LedgerState.IN_FLIGHT else entry.lease_until)
        if completion.outcome is LedgerState.FAILED and completion.error_type == "RecipientUnsubscribed":
            self._channels[completion.channel] = ChannelPreference(False, _iso(now), "provider")


def _lease_until(request: ReserveRequest, now: datetime) -> str:
    return _iso(now + timedelta(seconds=request.lease_seconds)) if request.lease_seconds > 0 else ""


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
