"""WhatsApp's customer-service window: when a send may be free-form text and when it needs a template.

WhatsApp delivers a business's free-form message only within 24 hours of the customer's last
message to the business; outside that window only an approved template (Twilio Content API
``content_sid``) goes through. The webhooks process records when each customer last wrote on
WhatsApp (`InboundMessage`, applied by ``store.feedback``); the send activity asks an
`InboundWindows` at send time and `choose_content` decides what goes out:

* a variant with free-form text (a ``body``) inside the window: the text;
* outside the window (or when nothing is known of one): the variant's template if it has a
  ``content_sid``, else nothing: the send fails `OutsideWhatsAppWindowError` without a provider call;
* a variant with a template and no text: the template, whatever the window (as always).

docs/architecture.md ("WhatsApp's 24-hour window") has the decision; the journey validator's rule
is in ``journeys/_whatsapp_checks.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

#: WhatsApp's customer-service window, counted from the customer's last inbound message.
WINDOW = timedelta(hours=24)
#: Taken off the window's end: the recorded time is when the webhook heard of the message, a little
#: after WhatsApp received it, and the send still has to reach WhatsApp; a message that arrives
#: just after the window closes is refused by WhatsApp as a permanent provider error.
WINDOW_MARGIN = timedelta(minutes=5)


class WhatsAppContent(enum.StrEnum):
    """What one WhatsApp send carries."""

    #: The variant's ``body`` as free-form text (the template, if any, is not used).
    FREE_FORM = "free_form"
    #: The variant's approved template (``content_sid`` and ``content_variables``).
    TEMPLATE = "template"
    #: Free-form text only, and the window is closed: nothing can be sent.
    OUTSIDE_WINDOW = "outside_window"


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Whether a free-form message sent ``now`` reaches a customer who last wrote at ``last_inbound_at``."""
    return last_inbound_at is not None and now < last_inbound_at + WINDOW - WINDOW_MARGIN


def choose_content(*, free_form: bool, template: bool, last_inbound_at: datetime | None,
                   now: datetime) -> WhatsAppContent:
    """The content of a WhatsApp send whose variant has free-form text (``free_form``) and/or a ``template``."""
    if not free_form:
        return WhatsAppContent.TEMPLATE
    if window_open(last_inbound_at, now):
        return WhatsAppContent.FREE_FORM
    return WhatsAppContent.TEMPLATE if template else WhatsAppContent.OUTSIDE_WINDOW


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message to the business on WhatsApp (any text, keywords included): it opens the window.

    Attributes:
        address_hash: the sender's number as a ``whatsapp`` address (`activities.addresses.address_hash`).
        phone_hash: the same number as an ``sms`` address, which the store's address index holds for
            customers whose WhatsApp number is their phone.
        at: when it was received (ISO 8601, UTC).
        report_id: the provider's message id (``twilio:SM...``), for logs.
    """

    address_hash: str
    phone_hash: str
    at: str
    report_id: str = ""


class InboundWindows(Protocol):
    """Where the send activity reads when a customer last wrote on WhatsApp from a number."""

    async def last_whatsapp_inbound(self, customer_id: str, address_hash: str) -> datetime | None:
        """When ``customer_id`` last wrote from the WhatsApp address ``address_hash``; None when never (known)."""
        ...
