"""The delivery ledger and preference gate the send activity consults around every provider call.

The activity asks `DeliveryLedger.reserve` before the provider call (opt-out, quiet hours,
frequency cap, already delivered?, and whether another attempt holds the send's lease) and tells
`DeliveryLedger.complete` what came of it. The production implementation keeps both in the
customer's ``CustomerPreferences`` workflow (workflows/preferences.py), so the state is durable and
shared by every worker replica without another server. docs/architecture.md (ADR-9) gives the
exactly-once argument built on the lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from activities.outcomes import LedgerState, ReserveDecision


@dataclass(frozen=True)
class ReserveRequest:
    """Asks to send one notification now.

    Attributes:
        idempotency_key: the notification (workflow id + step id [+ fallback channel]).
        customer_id, timezone: whose preferences and which calendar.
        channel: ``email``, ``sms`` or ``whatsapp``.
        quiet_hours: ``"HH:MM-HH:MM"`` in the customer's timezone, ``""`` for none.
        daily_cap: at most this many sends per channel per local calendar day; 0 means no cap.
        on_cap: ``skip`` or ``defer`` (to the next local day) when the cap is reached.
        now_epoch_seconds: the attempt's wall-clock start, kept so a later attempt can ask the
            provider what arrived since (provider clocks are wall clocks, not workflow time).
        attempt: the activity attempt asking; the lease is granted to it and fences out the others.
        lease_seconds: how long the granted attempt may take to call the provider; 0 grants no
            lease (requests recorded before leases existed).
        caps: the rolling caps in effect for this send (`activities.caps.CapSet` text), worker
            defaults already overridden by the journey's and the step's.
        priority: the send's `activities.caps.Priority`; ``""`` is ``normal``.
        cap_reserve: slots each priority level keeps free for the levels above it.
        address_hash: `activities.addresses.AddressHasher.hash` of the address it goes to, so a
            suppressed address is refused (``""``: unknown, from requests recorded before).
        other_address_hashes: the address's other stored forms (older keys, the legacy unkeyed
            hash), so a suppression recorded before a key rotation still refuses it.
        topic: the send's subscription topic (``""``: none, the channel-wide opt-out alone decides).
        topic_default: `activities.topics.ConsentDefault` value that holds when the customer never
            chose; ``""`` for a transactional topic (no topic consent asked).
    """

    idempotency_key: str
    customer_id: str
    channel: str
    timezone: str = "UTC"
    quiet_hours: str = ""
    daily_cap: int = 0
    on_cap: str = "skip"
    now_epoch_seconds: float = 0.0
    attempt: int = 0
    lease_seconds: float = 0.0
    caps: str = ""
    priority: str = ""
    cap_reserve: int = 1
    address_hash: str = ""
    other_address_hashes: list[str] = field(default_factory=list)
    topic: str = ""
    topic_default: str = ""

    def address_forms(self) -> list[str]:
        """Every form of the address's hash to look up (none when unknown)."""
        return [self.address_hash, *self.other_address_hashes] if self.address_hash else []


@runtime_checkable
class TopicConsentLedger(Protocol):
    """A ledger that keeps consent per topic and decides it in `reserve` (the customer store's).

    The ledger kept in Temporal (``CustomerPreferences``) keeps channel opt-outs only: with it a
    topic's default decides, and the send activity applies it (activities/topics.py).
    """

    keeps_topic_consent: bool


@dataclass(frozen=True)
class Reservation:
    """The answer to a `ReserveRequest`.

    Attributes:
        decision: see `ReserveDecision`; ``send`` grants the lease to the asking attempt.
        not_before: ISO 8601 UTC instant after which to ask again (``defer``, ``busy``).
        previous_attempt_uncertain: an earlier attempt held the lease and never reported back (a
            crash), so the provider may already have the message: reconcile, or apply the
            channel's policy for uncertain deliveries.
        previous_started_epoch_seconds: when that earlier attempt started.
        previous_provider: the provider that earlier attempt's marked call went to (``""``: not
            recorded, as before failover, which means the channel's first provider). An uncertain
            send is settled with that provider and never moved to another.
        provider, provider_message_id: for ``delivered``, what the earlier attempt recorded.
        capped_by: for ``capped`` or a cap's ``defer``, the cap that held the send back
            (``scope:window``, e.g. ``all:month``).
    """

    decision: ReserveDecision
    not_before: str | None = None
    previous_attempt_uncertain: bool = False
    previous_started_epoch_seconds: float = 0.0
    previous_provider: str = ""
    provider: str = ""
    provider_message_id: str | None = None
    capped_by: str = ""


@dataclass(frozen=True)
class Completion:
    """What came of a reserved send.

    Attributes:
        outcome: ``delivered``; ``retrying`` (the provider answered with a retryable error, or the
            attempt gave its lease back before calling: nothing was delivered); ``uncertain`` (it
            may have been); or ``failed`` (permanent; releases the cap slot).
        error_type: for ``failed``, the error type; ``RecipientUnsubscribed`` also records an
            opt-out for the channel.
        attempt: the attempt reporting; a report from an attempt that no longer holds the lease
            is ignored unless it says ``delivered``.
    """

    idempotency_key: str
    customer_id: str
    channel: str
    outcome: LedgerState
    provider: str = ""
    provider_message_id: str | None = None
    error_type: str = ""
    attempt: int = 0


class DeliveryLedger(Protocol):
    """Durable, shared state consulted before and written after every provider call."""

    async def reserve(self, request: ReserveRequest) -> Reservation:
        """Atomically checks preferences and the ledger, and grants the attempt a lease when it may go ahead."""
        ...

    async def complete(self, completion: Completion) -> None:
        """Records the outcome of a reserved send."""
        ...


@runtime_checkable
class CallMarkingLedger(DeliveryLedger, Protocol):
    """A ledger that narrows the uncertain window to "request sent, answer not recorded" (ADR-9).

    The customer store (store/ledger.py) is one; the older per-customer workflow ledger is not, and
    there every expired lease counts as uncertain.
    """

    async def mark_calling(self, idempotency_key: str, attempt: int, provider: str = "") -> bool:
        """Records durably that ``attempt`` calls ``provider`` now; False when it no longer holds the lease.

        The provider is recorded with the mark, so a later attempt that finds the call uncertain knows
        which provider may hold the message, and settles it there (never at another).
        """
        ...

    async def record_unavailable(self, idempotency_key: str, attempt: int, lease_seconds: float) -> bool:
        """Records that the marked call was answered "unavailable" (nothing delivered): clears the mark
        and renews the lease for a call to the channel's next provider; False when the lease was lost."""
        ...

    async def release(self, idempotency_key: str, attempt: int) -> None:
        """Gives the lease back before any call was made."""
        ...

    async def reported(self, idempotency_key: str) -> tuple[bool, str | None]:
        """Whether the provider reported on the send (its webhook), and the message id it named."""
        ...


@dataclass(frozen=True)
class FunnelStep:
    """Where a delivered send sits in its journey, for the funnel (``eventflow journeys report``).

    Attributes:
        journey_id, journey_version: the journey and the version the instance runs.
        workflow_id: the instance.
        step_id: the send step.
        variants: the split variants the instance took so far, by split step (its arm; holdouts send nothing).
    """

    journey_id: str
    journey_version: int
    workflow_id: str
    step_id: str
    variants: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class FunnelLedger(DeliveryLedger, Protocol):
    """A ledger that records a delivered send's funnel event with the delivery, in one write (no extra call)."""

    async def complete_step(self, completion: Completion, step: FunnelStep) -> None:
        """`complete`, plus a ``sent`` funnel event for ``step`` when the completion says delivered."""
        ...
