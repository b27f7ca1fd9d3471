"""The validator's WhatsApp rule: a send that may reach a customer outside the 24-hour window needs a template.

WhatsApp takes a business's free-form text only within 24 hours of the customer's last message;
outside them only an approved template (``content_sid``) goes through, and the send activity then
sends the variant's template, or fails ``OutsideWhatsAppWindow`` without a provider call when it
has none (activities/whatsapp.py). Journeys start from upstream events, not from a customer's
message, so no send can count on the window being open. The rule, per send step (digests too):

* on ``whatsapp`` with a ``fallback`` channel, a variant without ``content_sid`` is allowed: inside
  the window its text goes out, outside it the send fails and the fallback channel carries it;
* otherwise (``whatsapp`` without a fallback, or ``whatsapp`` as the fallback) every locale's
  WhatsApp variant needs a ``content_sid``; its ``body``, if it has one, is still sent free-form
  inside the window.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.vocabulary import ChannelName
from journeys._yaml import DocPath
from journeys.model import JourneyDefinition, Template
from journeys.steps import DigestStep, SendOptions, SendStep, walk


def whatsapp_window_problems(definition: JourneyDefinition) -> Iterator[tuple[DocPath, str]]:
    """The sends of ``definition`` that could fall outside the window with nothing to send: (where, problem)."""
    for step, path in walk(definition.steps):
        match step:
            case SendStep(send=send):
                where: DocPath = (*path, "send")
            case DigestStep(send=send):
                where = (*path, "digest", "send")
            case _:
                continue
        template = definition.templates.get(send.template)
        if template is None:
            continue  # an unknown template is the loader's problem, reported already
        problem = _send_problem(send, template)
        if problem is not None:
            option, message = problem
            yield (*where, option), message


def _send_problem(send: SendOptions, template: Template) -> tuple[str, str] | None:
    """The option to blame and why, when this send on (or falling back to) WhatsApp has free-form text only."""
    fallback = send.fallback if send.fallback != send.channel else None
    if send.channel == ChannelName.WHATSAPP and fallback is None:
        option = "template"
    elif fallback == ChannelName.WHATSAPP:
        option = "fallback"
    else:
        return None  # not on WhatsApp, or on WhatsApp with another channel for outside the window
    locales = sorted(locale for locale, variant in template.variants.get(ChannelName.WHATSAPP, {}).items()
                     if not variant.get("content_sid"))
    if not locales:
        return None
    return option, (f"template {template.id!r} whatsapp/{', '.join(locales)} has no content_sid: WhatsApp "
                    "takes free-form text only within 24 hours of the customer's last message, so outside "
                    "them this send would fail (OutsideWhatsAppWindow); give the variant an approved "
                    "template's content_sid (its body still goes free-form inside the window)"
                    + (" or the send a fallback channel" if option == "template" else ""))
