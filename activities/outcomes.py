"""The delivery vocabulary shared by the send activity, the journey interpreter and the ledger.

Each is a `StrEnum`, so the JSON on the wire (and in recorded histories) is the same plain string
it was before these types existed. A permanent failure's error type travels in its own field,
never as a ``failed:<type>`` prefix; `split_legacy_status` reads the prefixed form that older
histories and ledger entries still carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class ReserveDecision(StrEnum):
    """The ledger's answer to "may this notification go to the provider now?"."""

    SEND = "send"
    DELIVERED = "delivered"
    OPTED_OUT = "opted_out"
    CAPPED = "capped"
    DEFER = "defer"
    #: Another attempt holds an unexpired lease on this notification: ask again after ``not_before``.
    BUSY = "busy"
    #: The address is suppressed on this channel (hard bounce, spam report, unsubscribe, STOP).
    SUPPRESSED = "suppressed"
    #: The customer's profile has no contact point for this channel.
    NO_CONTACT = "no_contact"
    #: The customer has not consented to the send's topic on this channel (activities/topics.py).
    NO_CONSENT = "no_consent"


class SendStatus(StrEnum):
    """What became of one notification, as the activity returns it and the journey records it."""

    SENT = "sent"
    DUPLICATE = "duplicate"
    OPTED_OUT = "opted_out"
    CAPPED = "capped"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: A crash window left it unknown whether the provider accepted it, and the channel's policy is
    #: at-most-once: it is not sent again.
    UNCERTAIN = "uncertain"
    #: Not sent: the address is suppressed on this channel; no provider call was made.
    SUPPRESSED = "suppressed"
    #: Not sent: the customer has no contact point for this channel; recorded, never retried.
    NO_CONTACT = "no_contact"

    @classmethod
    def _missing_(cls, value: object) -> SendStatus | None:
        # Records written before this type carried the error as a suffix: "failed:InvalidAddress".
        return _legacy_member(cls, value)

    @property
    def reached_customer(self) -> bool:
        return self in (SendStatus.SENT, SendStatus.DUPLICATE)


class LedgerState(StrEnum):
    """One notification's state in the customer's delivery ledger."""

    IN_FLIGHT = "in_flight"
    RETRYING = "retrying"
    UNCERTAIN = "uncertain"
    DELIVERED = "delivered"
    FAILED = "failed"

    @classmethod
    def _missing_(cls, value: object) -> LedgerState | None:
        return _legacy_member(cls, value)

    @property
    def holds_cap_slot(self) -> bool:
        """A permanent failure frees its frequency-cap slot; every other state keeps it."""
        return self is not LedgerState.FAILED


class DeliveryOutcome(StrEnum):
    """What a provider reported about a message after accepting it (webhooks, status callbacks).

    ``ACCEPTED`` is the send activity's own knowledge; the rest arrive later as `DeliveryReport`s.
    """

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    UNDELIVERED = "undelivered"
    OPENED = "opened"
    CLICKED = "clicked"
    SPAM_REPORTED = "spam_reported"
    UNSUBSCRIBED = "unsubscribed"


#: Signal name on the Journey workflow that carries a `DeliveryReport` for one of its sends.
DELIVERY_SIGNAL = "delivery"


@dataclass(frozen=True)
class DeliveryReport:
    """One provider report about one send, as handed to the ledger and to the sending journey.

    Attributes:
        idempotency_key: the send's ledger key (carried to the provider as custom args or as a
            status-callback URL parameter).
        customer_id, workflow_id, step_id: whose ledger, which journey instance and step.
        channel: ``email``, ``sms`` or ``whatsapp``; provider: ``sendgrid``, ``twilio``, ...
        outcome: what happened; at: when the provider says it happened (ISO 8601 UTC).
        provider_message_id: the provider's id of the message; error_code: the provider's code.
        report_id: the provider's id of this report (SendGrid ``sg_event_id``, Twilio
            ``MessageSid:MessageStatus``), so a report delivered twice counts once.
    """

    idempotency_key: str
    customer_id: str
    channel: str
    provider: str
    outcome: DeliveryOutcome
    at: str
    workflow_id: str = ""
    step_id: str = ""
    provider_message_id: str = ""
    error_code: str = ""
    report_id: str = ""


def split_legacy_status(text: str) -> tuple[str, str]:
    """``"failed:InvalidAddress"`` -> ``("failed", "InvalidAddress")``; ``"sent"`` -> ``("sent", "")``."""
    head, _, tail = text.partition(":")
    return head, tail


def _legacy_member(cls: type[E], value: object) -> E | None:
    if isinstance(value, str) and ":" in value:
        head, _ = split_legacy_status(value)
        try:
            return cls(head)
        except ValueError:
            return None
    return None
