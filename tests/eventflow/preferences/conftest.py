"""The preference center on the session's PostgreSQL (a fresh database per module), on a real port."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from activities.topics import ConsentDefault, Topic, TopicCatalog
from core.preference_links import PreferenceLinks
from core.signing import SigningKeys
from eventflow.preferences.app import PreferenceCenter
from store.consent import ConsentStore
from tests.store.conftest import store_dsn, store_pool

__all__ = ["store_dsn", "store_pool"]

KEYS = SigningKeys.parse("k1=" + base64.b64encode(b"p" * 32).decode())
API_TOKEN = "t" * 40
TOPICS = TopicCatalog((
    Topic("order_updates", {"en": "Order updates", "de": "Bestellinformationen"}, transactional=True),
    Topic("product_news", {"en": "Product news", "de": "Produktneuigkeiten"},
          description={"en": "New products monthly.", "de": "Neue Produkte monatlich."}, channels=("email",),
          default=ConsentDefault.OPTED_OUT),
    Topic("recommendations", {"en": "Recommendations", "de": "Empfehlungen"}, channels=("email", "sms")),
))


class Clock:
    """Epoch seconds the center reads; tests move it past an expiry."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def center(store_pool: asyncpg.Pool, clock: Clock) -> AsyncIterator[PreferenceCenter]:
    served = PreferenceCenter(links=PreferenceLinks(KEYS), consent=ConsentStore(store_pool), topics=TOPICS,
                              api_token=API_TOKEN, form_seconds=600, clock=clock, host="127.0.0.1")
    await served.start()
    yield served
    await served.stop()


async def add_customer(pool: asyncpg.Pool, customer_id: str, locale: str) -> None:
    fields = {"locale": {"v": locale, "t": "2026-01-01T00:00:00.000000+00:00", "e": "e1"}}
    await pool.execute("INSERT INTO eventflow.customers (customer_id, fields) VALUES ($1, $2::jsonb)", customer_id,
                       json.dumps(fields))
