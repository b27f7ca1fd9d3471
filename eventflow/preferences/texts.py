"""The preference center's words, per language: English and German.

The page's language is the customer's profile locale (``de-AT`` reads German), else the browser's
``Accept-Language``, else English. A topic's own title and description come from topics.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Language(StrEnum):
    EN = "en"
    DE = "de"


TEXTS: Mapping[Language, Mapping[str, str]] = {
    Language.EN: {
        "title": "Your notification preferences",
        "intro": "Choose what we send you and where. Changes apply to the next message.",
        "channels_legend": "Channels",
        "channels_help": "Untick a channel to receive nothing on it (except what we must send, such as receipts).",
        "topics_legend": "Topics",
        "always": "Always sent: this is needed to serve you and cannot be turned off.",
        "save": "Save preferences",
        "saved_title": "Preferences saved",
        "saved": "Your preferences are saved. They apply from the next message.",
        "unchanged": "Nothing changed: these already were your preferences.",
        "back": "Back to your preferences",
        "email": "Email", "sms": "Text message (SMS)", "whatsapp": "WhatsApp",
        "push": "App notifications", "webpush": "Browser notifications",
        "error_title": "This link cannot be used",
        "invalid": "This link is not valid. Please use the link from your most recent message.",
        "expired": "This link has expired. Please use the link from your most recent message.",
        "replayed": "This form was already submitted. Open the link from your message again to make more changes.",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_confirm": "Stop receiving “{topic}” by {channel}?",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed": "You will no longer receive “{topic}” by {channel}.",
        "all_messages": "any messages we may stop",
        "skip": "Skip to the form",
    },
    Language.DE: {
        "title": "Ihre Benachrichtigungseinstellungen",
        "intro": "Wählen Sie, was wir Ihnen senden und auf welchem Weg. Änderungen gelten ab der nächsten Nachricht.",
        "channels_legend": "Kanäle",
        "channels_help": "Entfernen Sie den Haken bei einem Kanal, um dort nichts mehr zu erhalten "
                         "(außer was wir senden müssen, etwa Belege).",
        "topics_legend": "Themen",
        "always": "Wird immer gesendet: notwendig für Ihre Bestellungen, nicht abbestellbar.",
        "save": "Einstellungen speichern",
        "saved_title": "Einstellungen gespeichert",
        "saved": "Ihre Einstellungen sind gespeichert. Sie gelten ab der nächsten Nachricht.",
        "unchanged": "Nichts geändert: Das waren bereits Ihre Einstellungen.",
        "back": "Zurück zu Ihren Einstellungen",
        "email": "E-Mail", "sms": "SMS", "whatsapp": "WhatsApp",
        "push": "App-Benachrichtigungen", "webpush": "Browser-Benachrichtigungen",
        "error_title": "Dieser Link kann nicht verwendet werden",
        "invalid": "Dieser Link ist ungültig. Bitte verwenden Sie den Link aus Ihrer neuesten Nachricht.",
        "expired": "Dieser Link ist abgelaufen. Bitte verwenden Sie den Link aus Ihrer neuesten Nachricht.",
        "replayed": "Dieses Formular wurde bereits abgeschickt. Öffnen Sie den Link aus Ihrer Nachricht erneut, "
                    "um weitere Änderungen vorzunehmen.",
        "unsubscribe_title": "Abmelden",
        "unsubscribe_confirm": "„{topic}“ nicht mehr per {channel} erhalten?",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed": "Sie erhalten „{topic}“ nicht mehr per {channel}.",
        "all_messages": "alle abbestellbaren Nachrichten",
        "skip": "Zum Formular springen",
    },
}


def language_of(locale: str | None) -> Language | None:
    """The language of a locale (``de-AT``, ``de_DE``, ``en``), None when not offered."""
    if not locale:
        return None
    head = locale.replace("_", "-").split("-")[0].strip().lower()
    return Language(head) if head in {language.value for language in Language} else None


def from_accept_language(header: str) -> Language | None:
    """The first offered language of an ``Accept-Language`` header, by quality."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        ranked.append((-quality, index, tag))
    for _, _, tag in sorted(ranked):
        language = language_of(tag)
        if language is not None:
            return language
    return None
