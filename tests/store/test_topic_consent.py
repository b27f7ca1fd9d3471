"""Topics and one-click unsubscribe end to end, on real Temporal and PostgreSQL, counted at the SendGrid stub.

A journey's email of a non-transactional topic carries List-Unsubscribe (https one-click URL and
mailto) and List-Unsubscribe-Post; a transactional one carries neither; an opt-in topic without
consent is ``skipped:no_consent`` with no provider call. Posting ``List-Unsubscribe=One-Click`` to
the URL (twice: idempotent) makes the next send of that topic ``skipped:no_consent``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.links import MessageLinks
from activities.outcomes import SendStatus
from activities.send import NotificationActivities
from activities.topics import ConsentDefault, Topic, TopicCatalog
from core.preference_links import PreferenceLinks
from core.signing import SigningKeys
from eventflow.preferences.app import PreferenceCenter
from store.consent import ConsentStore
from store.ledger import PostgresLedger
from tests.activities.journey_support import channels_for, event, journey, run_journey, send
from tests.activities.provider_stub import ProviderStub, provider
from workflows.journey import JourneyStatus
from workflows.queues import send_task_queue
from workflows.worker import WORKFLOWS

__all__ = ["provider"]

TOPICS = TopicCatalog((
    Topic("tips", {"en": "Tips"}, channels=("email",)),
    Topic("receipts", {"en": "Receipts"}, transactional=True),
    Topic("news", {"en": "News"}, channels=("email",), default=ConsentDefault.OPTED_OUT),
))
KEYS = SigningKeys.parse("k1=" + base64.b64encode(b"k" * 32).decode())


@pytest.fixture
async def center(store_pool: asyncpg.Pool) -> AsyncIterator[PreferenceCenter]:
    served = PreferenceCenter(links=PreferenceLinks(KEYS), consent=ConsentStore(store_pool), topics=TOPICS,
                              host="127.0.0.1")
    await served.start()
    yield served
    await served.stop()


def _outcomes(status: JourneyStatus) -> dict[str, str]:
    return {record.step_id: record.outcome for record in status.sends}


async def test_one_click_unsubscribe_stops_the_next_send_of_that_topic(
        temporal_client: Client, store_pool: asyncpg.Pool, provider: ProviderStub, center: PreferenceCenter,
        unique: str) -> None:
    links = MessageLinks(PreferenceLinks(KEYS), f"http://127.0.0.1:{center.port}", page_seconds=3600,
                         unsubscribe_seconds=3600, mailto="unsubscribe@example.com")
    activities = NotificationActivities(channels_for(provider.base_url), ledger=PostgresLedger(store_pool),
                                        topics=TOPICS, links=links)
    queue, customer = f"q-{unique}", f"c-{unique}"
    steps = [send("tip", "email", topic="tips"), send("receipt", "email", topic="receipts"),
             send("news", "email", topic="news")]
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)), \
            Worker(temporal_client, task_queue=send_task_queue(queue, "email"),
                   activities=[activities.send_notification]):
        first = await run_journey(temporal_client, queue, journey(steps), event(customer), f"journey:t1:{unique}")
        assert _outcomes(first) == {"tip": "sent", "receipt": "sent", "news": "skipped:no_consent"}
        tip, receipt = (sent.body for sent in provider.sends())
        assert "List-Unsubscribe" not in receipt["headers"], "a transactional email cannot be unsubscribed"
        assert tip["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = (part.strip(" <>") for part in tip["headers"]["List-Unsubscribe"].split(","))
        assert https.startswith(f"http://127.0.0.1:{center.port}/u/")
        assert mailto.startswith("mailto:unsubscribe@example.com?subject=unsubscribe%20")

        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # a mailbox provider may post more than once: same effect
                async with session.post(https, data={"List-Unsubscribe": "One-Click"}) as answer:
                    assert answer.status == 200, await answer.text()
        audit = await ConsentStore(store_pool).audit(customer)
        assert [(a.channel, a.topic, a.state, a.source) for a in audit] == [
            ("email", "tips", "opted_out", "one_click_unsubscribe")]

        second = await run_journey(temporal_client, queue, journey(steps), event(customer), f"journey:t2:{unique}")
    assert _outcomes(second) == {"tip": "skipped:no_consent", "receipt": "sent", "news": "skipped:no_consent"}
    assert [record.status for record in second.sends][:1] == [SendStatus.SKIPPED]
    keys = provider.accepted_by_key()
    assert sorted(keys) == sorted([f"journey:t1:{unique}/tip", f"journey:t1:{unique}/receipt",
                                   f"journey:t2:{unique}/receipt"]), keys


async def test_a_send_without_a_topic_keeps_the_channel_rule_and_its_header_opts_out_of_the_channel(
        temporal_client: Client, store_pool: asyncpg.Pool, provider: ProviderStub, center: PreferenceCenter,
        unique: str) -> None:
    links = MessageLinks(PreferenceLinks(KEYS), f"http://127.0.0.1:{center.port}", page_seconds=3600,
                         unsubscribe_seconds=3600)
    activities = NotificationActivities(channels_for(provider.base_url), ledger=PostgresLedger(store_pool),
                                        topics=TOPICS, links=links)
    queue, customer = f"q-{unique}", f"c-{unique}"
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)), \
            Worker(temporal_client, task_queue=send_task_queue(queue, "email"),
                   activities=[activities.send_notification]):
        first = await run_journey(temporal_client, queue, journey([send("hello", "email")]), event(customer),
                                  f"journey:p1:{unique}")
        assert _outcomes(first) == {"hello": "sent"}
        (header,) = (sent.body["headers"]["List-Unsubscribe"] for sent in provider.sends())
        assert "mailto:" not in header, "no mailto configured: the https URL only"
        async with aiohttp.ClientSession() as session, \
                session.post(header.strip("<>"), data={"List-Unsubscribe": "One-Click"}) as answer:
            assert answer.status == 200
        second = await run_journey(temporal_client, queue, journey([send("hello", "email")]), event(customer),
                                   f"journey:p2:{unique}")
    assert _outcomes(second) == {"hello": "opted_out"}, "the channel-wide opt-out, as before topics"
