"""The delivery vocabulary shared by the send activity, the journey interpreter and the ledger.

Each is a `StrEnum`, so the JSON on the wire (and in recorded histories) is the same plain string
it was before these types existed. A permanent failure's error type travels in its own field,
never as a ``failed:<type>`` prefix; `split_legacy_status` reads the prefixed form that older
histories and ledger entries still carry.
"""

from __future__ import annotations

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
