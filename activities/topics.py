"""Subscription topics: what a customer may subscribe to per channel, and what counts as consent.

A topic (``product_news``, ``order_updates``) is declared as data in the journeys folder's
``topics.yaml`` (read and checked by `journeys.topics`); a send step names its topic. These types
live here, below the journeys layer, because the send activity decides consent with them.

Consent is per customer, channel and topic (``eventflow.consent``). A topic's ``default`` says what
holds before the customer said anything: ``opted_in`` (an existing-customer, soft opt-in topic such
as order updates) or ``opted_out`` (explicit opt-in, as GDPR asks of a newsletter). A
``transactional`` topic cannot be unsubscribed: the preference center shows it without a box,
emails of it carry no ``List-Unsubscribe`` header, and only a channel-wide opt-out stops it.
A send without a topic keeps the behaviour from before topics existed: only the channel-wide
opt-out applies (docs/architecture.md, "Subscription topics, consent and preference
links").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from core.vocabulary import CHANNELS

#: A topic name: what consent rows, tokens and URLs carry.
TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: The locale a topic's title and description must have (the preference center's fallback).
BASE_LOCALE = "en"


class ConsentDefault(StrEnum):
    """What holds for a customer who never changed their consent to a topic on a channel."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class SkipReason(StrEnum):
    """Why a send was ``skipped`` (the journey records ``skipped:<reason>``)."""

    #: The customer has not consented to the send's topic on its channel (or withdrew it).
    NO_CONSENT = "no_consent"
    #: The journey exited while the send waited out quiet hours.
    JOURNEY_EXITED = "journey_exited"


@dataclass(frozen=True)
class Topic:
    """One subscription topic.

    Attributes:
        name: the topic's id (`TOPIC_NAME`).
        title, description: by locale; ``en`` is required, other locales fall back to it.
        channels: the channels it may be sent on (and that the preference center offers for it).
        transactional: cannot be unsubscribed (receipts, password resets).
        default: consent before the customer chose; ignored for transactional topics.
    """

    name: str
    title: Mapping[str, str]
    channels: tuple[str, ...] = CHANNELS
    description: Mapping[str, str] = field(default_factory=dict)
    transactional: bool = False
    default: ConsentDefault = ConsentDefault.OPTED_IN

    def title_in(self, locale: str) -> str:
        return _localized(self.title, locale)

    def description_in(self, locale: str) -> str:
        return _localized(self.description, locale)

    def subscribed(self, state: str | None) -> bool:
        """Whether a send of this topic may go, given the customer's recorded state (None: none recorded)."""
        if self.transactional:
            return True
        if state is None:
            return self.default is ConsentDefault.OPTED_IN
        return state == ConsentDefault.OPTED_IN.value


def asked_default(topic: Topic | None) -> str:
    """The `ConsentDefault` value a send of ``topic`` asks the ledger to apply when the customer never
    chose (`activities.ledger.ReserveRequest.topic_default`); ``""`` when no topic consent is asked:
    no topic, or a transactional one (then only the channel-wide opt-out decides).

    The send activity and a segment's ``consent`` condition (store/segments.py) both take it from here,
    so a segment admits exactly the customers a send of the topic would not skip for consent.
    """
    return "" if topic is None or topic.transactional else topic.default.value


def _localized(texts: Mapping[str, str], locale: str) -> str:
    language = locale.replace("_", "-").split("-")[0].lower()
    return texts.get(locale) or texts.get(language) or texts.get(BASE_LOCALE) or next(iter(texts.values()), "")


@dataclass(frozen=True)
class TopicCatalog:
    """The declared topics, in file order."""

    topics: tuple[Topic, ...] = ()

    def __post_init__(self) -> None:
        names = [topic.name for topic in self.topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topics declared twice: {', '.join(duplicates)}")

    def get(self, name: str) -> Topic | None:
        return next((topic for topic in self.topics if topic.name == name), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[Topic]:
        return iter(self.topics)

    def __len__(self) -> int:
        return len(self.topics)

    def unsubscribable(self) -> tuple[Topic, ...]:
        """The topics a customer may opt out of (every one but the transactional ones)."""
        return tuple(topic for topic in self.topics if not topic.transactional)
