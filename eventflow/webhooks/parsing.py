"""Provider requests to feedback records: SendGrid Event Webhook batches, Twilio status callbacks and inbound messages.

Pure functions over already verified bodies. A body that is not what the provider sends raises
`MalformedRequest` (answered 400); events that are not about an Eventflow send (no idempotency
key) and statuses that are not outcomes (``queued``, ``sending``) yield nothing. Addresses are
hashed here and go no further in clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum

from activities.addresses import UNKEYED, AddressHasher
from activities.outcomes import DeliveryOutcome, DeliveryReport
from activities.whatsapp import InboundMessage
from consumer.feedback import FeedbackMessage
from core.errors import EventflowError
from core.logs import mask_contact_details
from core.vocabulary import ChannelName
from workflows.suppression import ContactKeyword, DeliveryFeedback, KeywordAction

SENDGRID = "sendgrid"
TWILIO = "twilio"

#: SendGrid event type -> outcome. ``processed`` says SendGrid accepted the send: it settles a send
#: whose answer was lost (docs/architecture.md, ADR-10); the rest are not outcomes of a send.
SENDGRID_EVENTS: Mapping[str, DeliveryOutcome] = {
    "processed": DeliveryOutcome.ACCEPTED,
    "delivered": DeliveryOutcome.DELIVERED,
    "deferred": DeliveryOutcome.DEFERRED,
    "bounce": DeliveryOutcome.BOUNCED,
    "dropped": DeliveryOutcome.DROPPED,
    "spamreport": DeliveryOutcome.SPAM_REPORTED,
    "unsubscribe": DeliveryOutcome.UNSUBSCRIBED,
    "group_unsubscribe": DeliveryOutcome.UNSUBSCRIBED,
    "open": DeliveryOutcome.OPENED,
    "click": DeliveryOutcome.CLICKED,
}

#: Twilio ``MessageStatus`` -> outcome; queued, accepted, scheduled, sending are on the way, not outcomes.
TWILIO_STATUSES: Mapping[str, DeliveryOutcome] = {
    "sent": DeliveryOutcome.ACCEPTED,
    "delivered": DeliveryOutcome.DELIVERED,
    "undelivered": DeliveryOutcome.UNDELIVERED,
    "failed": DeliveryOutcome.UNDELIVERED,
    "read": DeliveryOutcome.OPENED,
    "canceled": DeliveryOutcome.DROPPED,
}

#: Inbound keywords, matched on the whole trimmed message as Twilio's own opt-out handling does.
KEYWORDS: Mapping[str, KeywordAction] = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), KeywordAction.OPT_OUT),
    **dict.fromkeys(("START", "YES", "UNSTOP"), KeywordAction.OPT_IN),
    **dict.fromkeys(("HELP", "INFO"), KeywordAction.HELP),
}

_MAX_CODE = 64


class RequestKind(StrEnum):
    """Which webhook a request came to (a metrics label)."""

    SENDGRID_EVENTS = "sendgrid_events"
    TWILIO_STATUS = "twilio_status"
    TWILIO_INBOUND = "twilio_inbound"


class MalformedRequest(EventflowError):
    """The body is not what the provider sends; answered 400, nothing handed on."""

    def __init__(self, kind: RequestKind, problem: str) -> None:
        super().__init__(f"malformed {kind} request: {problem}")
        self.kind = kind
        self.problem = problem


def _iso_from_epoch(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("timestamp is not a number")
    return datetime.fromtimestamp(float(value), UTC).isoformat()


def sendgrid_events(body: bytes, hasher: AddressHasher = UNKEYED) -> list[FeedbackMessage]:
    """The reports of one SendGrid Event Webhook POST (a JSON array of events)."""
    kind = RequestKind.SENDGRID_EVENTS
    try:
        events = json.loads(body)
    except ValueError as exc:
        raise MalformedRequest(kind, "body is not JSON") from exc
    if not isinstance(events, list):
        raise MalformedRequest(kind, "body is not a JSON array of events")
    messages: list[FeedbackMessage] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise MalformedRequest(kind, f"event {index} has no event type")
        outcome = SENDGRID_EVENTS.get(event["event"])
        key = event.get("idempotency_key")
        if outcome is None or not isinstance(key, str) or not key:
            continue  # not an outcome, or not one of our sends (no custom args)
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedRequest(kind, f"event {index} has no sg_event_id")
        try:
            at = _iso_from_epoch(event.get("timestamp"))
        except (ValueError, OverflowError, OSError) as exc:
            raise MalformedRequest(kind, f"event {index} has no valid timestamp") from exc
        # Free text (a drop reason) may quote the address: masked before it goes anywhere.
        code = mask_contact_details(str(event.get("type") or event.get("reason") or ""))[:_MAX_CODE] \
            if outcome in (DeliveryOutcome.BOUNCED, DeliveryOutcome.DROPPED) else ""
        message_id = str(event.get("sg_message_id") or "").partition(".")[0]
        email = event.get("email")
        report = DeliveryReport(
            idempotency_key=key, customer_id=str(event.get("customer_id") or ""),
            channel=str(event.get("channel") or "email"), provider=SENDGRID, outcome=outcome, at=at,
            workflow_id=str(event.get("workflow_id") or ""), step_id=str(event.get("step_id") or ""),
            provider_message_id=message_id, error_code=code, report_id=f"sendgrid:{event_id}")
        hashed = hasher.hash("email", email) if isinstance(email, str) else ""
        messages.append(FeedbackMessage(report=DeliveryFeedback(report, hashed)))
    return messages


def _channel_of(address: str, named: str) -> str:
    if named in ("sms", "whatsapp"):
        return named
    return "whatsapp" if address.startswith("whatsapp:") else "sms"


def twilio_status(form: Mapping[str, str], query: Mapping[str, str], now: datetime,
                  hasher: AddressHasher = UNKEYED) -> FeedbackMessage | None:
    """The report of one Twilio status callback; None for a status that is not an outcome or a send not ours.

    The send is named by the callback URL's query (``k`` idempotency key, ``c`` customer, ``w``
    workflow, ``s`` step, ``ch`` channel), which the send activity put there.
    """
    kind = RequestKind.TWILIO_STATUS
    sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not status:
        raise MalformedRequest(kind, "MessageSid or MessageStatus missing")
    outcome = TWILIO_STATUSES.get(status.lower())
    key = query.get("k", "")
    if outcome is None or not key:
        return None
    to = form.get("To", "")
    channel = _channel_of(to, query.get("ch", ""))
    report = DeliveryReport(
        idempotency_key=key, customer_id=query.get("c", ""), channel=channel, provider=TWILIO, outcome=outcome,
        at=now.astimezone(UTC).isoformat(), workflow_id=query.get("w", ""), step_id=query.get("s", ""),
        provider_message_id=sid, error_code=str(form.get("ErrorCode") or "")[:_MAX_CODE],
        report_id=f"twilio:{sid}:{status.lower()}")
    return FeedbackMessage(report=DeliveryFeedback(report, hasher.hash(channel, to) if to else ""))


def keyword_of(body: str) -> KeywordAction | None:
    """The keyword an inbound message is, or None (``" stop "`` is STOP; ``"stop it"`` is not a keyword)."""
    return KEYWORDS.get(body.strip().upper())


def twilio_inbound(form: Mapping[str, str], now: datetime, hasher: AddressHasher = UNKEYED) -> list[FeedbackMessage]:
    """The records of one Twilio inbound message: its keyword (STOP, START and synonyms; HELP hands on
    nothing), and, for any WhatsApp message, that the customer wrote (the 24-hour window, activities/whatsapp.py)."""
    kind = RequestKind.TWILIO_INBOUND
    sender, sid = form.get("From"), form.get("MessageSid") or form.get("SmsSid")
    if not sender or not sid:
        raise MalformedRequest(kind, "From or MessageSid missing")
    at, report_id = now.astimezone(UTC).isoformat(), f"twilio:{sid}"
    channel = _channel_of(sender, "")
    records: list[FeedbackMessage] = []
    action = keyword_of(form.get("Body", ""))
    if action is not None and action is not KeywordAction.HELP:
        current, *others = hasher.forms(channel, sender) or ("",)
        records.append(FeedbackMessage(keyword=ContactKeyword(channel, current, action, at, report_id, list(others))))
    if channel == ChannelName.WHATSAPP:
        # The current key's form: the address index is written with it.
        records.append(FeedbackMessage(inbound=InboundMessage(hasher.hash(ChannelName.WHATSAPP, sender),
                                                              hasher.hash(ChannelName.SMS, sender), at, report_id)))
    return records
