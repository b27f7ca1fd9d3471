"""The delivery ledger and preference gate the send activity consults around every provider call.

The activity asks `DeliveryLedger.reserve` before the provider call (opt-out, quiet hours,
frequency cap, and whether this idempotency key was already delivered or is in flight) and
`DeliveryLedger.complete` after it. The production implementation keeps both in the customer's
``CustomerPreferences`` workflow (workflows/preferences.py), updated with Temporal Updates, so the
state is durable and shared by every worker replica without another server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    """

    idempotency_key: str
    customer_id: str
    channel: str
    timezone: str = "UTC"
    quiet_hours: str = ""
    daily_cap: int = 0
    on_cap: str = "skip"
    now_epoch_seconds: float = 0.0


@dataclass(frozen=True)
class Reservation:
    """The answer to a `ReserveRequest`.

    Attributes:
        decision: ``send`` (go ahead; the send is counted), ``delivered`` (an earlier attempt delivered
            it: do not send), ``opted_out``, ``capped`` (skip), or ``defer`` (ask again at ``not_before``).
        not_before: ISO 8601 UTC instant a deferred send may be retried.
        previous_attempt_uncertain: an earlier attempt started and never reported back (a crash), so
            the provider may already have the message: reconcile before sending.
        previous_started_epoch_seconds: when that earlier attempt started.
        provider, provider_message_id: for ``delivered``, what the earlier attempt recorded.
    """

    decision: str
    not_before: str | None = None
    previous_attempt_uncertain: bool = False
    previous_started_epoch_seconds: float = 0.0
    provider: str = ""
    provider_message_id: str | None = None


@dataclass(frozen=True)
class Completion:
    """What came of a reserved send.

    Attributes:
        outcome: ``delivered``; ``retrying`` (the provider answered with a retryable error: nothing
            was delivered); ``uncertain`` (timeout: it may have been); or ``failed:<ErrorType>``
            (permanent; releases the cap slot). ``failed:RecipientUnsubscribed`` also records an
            opt-out for the channel.
    """

    idempotency_key: str
    customer_id: str
    channel: str
    outcome: str
    provider: str = ""
    provider_message_id: str | None = None


class DeliveryLedger(Protocol):
    """Durable, shared state consulted before and written after every provider call."""

    async def reserve(self, request: ReserveRequest) -> Reservation:
        """Atomically checks preferences and the ledger, and records the attempt when it may go ahead."""
        ...

    async def complete(self, completion: Completion) -> None:
        """Records the outcome of a reserved send."""
        ...
