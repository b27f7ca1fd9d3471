"""Delivery outcomes in the ledger, and the suppression list: what providers told us, applied deterministically.

The customer's ``CustomerPreferences`` workflow calls these pure functions from its handlers (so
they run inside the workflow sandbox and must stay deterministic):

* `advance` moves a ledger entry's outcome along a monotone order, so reports arriving late or
  twice never move it back: ``accepted < deferred < delivered = bounced = dropped = undelivered <
  opened < clicked < spam_reported = unsubscribed``. Among outcomes of equal rank the first wins.
* `suppression_reason` says which reports suppress the address: a hard bounce (SendGrid
  ``bounce`` that is not a ``blocked`` soft bounce), a spam report, a SendGrid unsubscribe, and
  Twilio's "unsubscribed recipient" error (21610). A STOP keyword (`ContactKeyword`) suppresses
  the phone number; START, or a later ``SubscriptionChanged`` opt-in, lifts it.
* `suppressed` answers the reservation: is this channel and address on the list?

Suppressions are keyed per channel and address hash (`activities.addresses.AddressHasher`), so a
customer whose address changes is not suppressed on the new one, and no address is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from activities.outcomes import DeliveryOutcome, DeliveryReport

#: The patch id guarding the suppression checks in ``CustomerPreferences`` (histories before it replay unchanged).
SUPPRESSION_PATCH = "delivery-feedback-suppression"
#: Signal on ``CustomerPreferences`` carrying a `DeliveryFeedback`.
DELIVERY_REPORT_SIGNAL = "delivery_report"
#: Signal on ``CustomerPreferences`` carrying a `ContactKeyword` (STOP / START).
CONTACT_KEYWORD_SIGNAL = "contact_keyword"
#: Report ids remembered for deduplication (a provider retries within hours, not thousands of reports).
REPORT_IDS_KEPT = 500

#: Twilio error code: the recipient replied STOP to this sender.
TWILIO_UNSUBSCRIBED = "21610"
#: SendGrid's bounce type for a temporary block (a soft bounce): the address is not suppressed.
SENDGRID_SOFT_BOUNCE = "blocked"

_RANK: Mapping[DeliveryOutcome, int] = {
    DeliveryOutcome.ACCEPTED: 0,
    DeliveryOutcome.DEFERRED: 1,
    DeliveryOutcome.DELIVERED: 2,
    DeliveryOutcome.BOUNCED: 2,
    DeliveryOutcome.DROPPED: 2,
    DeliveryOutcome.UNDELIVERED: 2,
    DeliveryOutcome.OPENED: 3,
    DeliveryOutcome.CLICKED: 4,
    DeliveryOutcome.SPAM_REPORTED: 5,
    DeliveryOutcome.UNSUBSCRIBED: 5,
}


class SuppressionReason(StrEnum):
    """Why an address is suppressed on a channel."""

    HARD_BOUNCE = "hard_bounce"
    SPAM_REPORT = "spam_report"
    UNSUBSCRIBE = "unsubscribe"
    STOP = "stop"


class KeywordAction(StrEnum):
    """What an inbound keyword asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


@dataclass(frozen=True)
class Suppression:
    """One suppressed address on one channel.

    Attributes:
        address_hash: the address (``""``: every address of the customer on the channel).
        reason: why; at: when the provider says it happened (ISO 8601 UTC); report_id: which report.
    """

    channel: str
    address_hash: str
    reason: SuppressionReason
    at: str
    report_id: str = ""


@dataclass(frozen=True)
class DeliveryFeedback:
    """A provider report for the customer's ledger, with the hash of the address it concerns (if known)."""

    report: DeliveryReport
    address_hash: str = ""


@dataclass(frozen=True)
class ContactKeyword:
    """An inbound STOP / START / HELP from one address on one channel (Twilio inbound messages)."""

    channel: str
    address_hash: str
    action: KeywordAction
    at: str
    report_id: str = ""
    #: The address's hashes under the other configured keys (and the legacy form), so a START
    #: after a key rotation lifts a STOP recorded before it.
    other_address_hashes: list[str] = field(default_factory=list)


def suppression_key(channel: str, address_hash: str) -> str:
    """The key of a suppression in the customer's list."""
    return f"{channel}:{address_hash}"


def outcome_rank(outcome: DeliveryOutcome | str) -> int:
    """The position of ``outcome`` in the monotone order (unknown outcomes rank lowest)."""
    try:
        return _RANK[DeliveryOutcome(outcome)]
    except ValueError:
        return -1


def advance(current: str, reported: DeliveryOutcome) -> bool:
    """Whether a ledger entry at outcome ``current`` (``""``: none yet) moves to ``reported``."""
    if not current:
        return True
    return outcome_rank(reported) > outcome_rank(current)


def suppression_reason(report: DeliveryReport) -> SuppressionReason | None:
    """The reason ``report`` suppresses its address, or None when it does not."""
    match report.outcome:
        case DeliveryOutcome.BOUNCED if report.error_code != SENDGRID_SOFT_BOUNCE:
            return SuppressionReason.HARD_BOUNCE
        case DeliveryOutcome.SPAM_REPORTED:
            return SuppressionReason.SPAM_REPORT
        case DeliveryOutcome.UNSUBSCRIBED:
            return SuppressionReason.UNSUBSCRIBE
        case DeliveryOutcome.UNDELIVERED if report.error_code == TWILIO_UNSUBSCRIBED:
            return SuppressionReason.STOP
    return None


def suppressed(suppressions: Mapping[str, Suppression], channel: str, address_hash: str,
               other_forms: Iterable[str] = ()) -> Suppression | None:
    """The suppression that stops a send on ``channel`` to ``address_hash``, if any.

    A suppression recorded without an address, or a request that does not know its address,
    matches every address of the customer on the channel (errs towards not sending).
    ``other_forms`` are the address's hashes under other keys (`activities.addresses.AddressHasher.forms`):
    a suppression recorded before a key rotation matches too.
    """
    forms = {address_hash, *other_forms}
    for suppression in suppressions.values():
        if suppression.channel != channel:
            continue
        if not suppression.address_hash or not address_hash or suppression.address_hash in forms:
            return suppression
    return None


def lift(suppressions: dict[str, Suppression], channel: str, address_hash: str = "",
         other_forms: Iterable[str] = ()) -> list[str]:
    """Removes the channel's suppressions of ``address_hash`` or its ``other_forms`` (all of the channel's
    when ``""``); returns their keys."""
    forms = {address_hash, *other_forms}
    keys = [key for key, s in suppressions.items()
            if s.channel == channel and (not address_hash or not s.address_hash or s.address_hash in forms)]
    for key in keys:
        del suppressions[key]
    return keys
