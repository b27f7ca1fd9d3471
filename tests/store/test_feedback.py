"""Provider reports, STOP/START and inbound WhatsApp messages on the customer store: each applies once."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from activities.addresses import unkeyed_address_hash as address_hash
from activities.whatsapp import InboundMessage
from store.customers import CustomerStore, ProfileWrite
from store.feedback import StoreFeedback
from store.forgetting import forget
from workflows.profile import ProfileUpdate
from workflows.suppression import ContactKeyword, KeywordAction


async def _suppressed(pool: asyncpg.Pool, address: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM eventflow.suppressions WHERE channel = 'sms'"
                                    " AND address_hash = $1", address))


async def test_a_replayed_start_after_a_later_stop_changes_nothing(store_pool: asyncpg.Pool) -> None:
    feedback, address = StoreFeedback(store_pool), f"h-{uuid.uuid4().hex[:8]}"
    start = ContactKeyword("sms", address, KeywordAction.OPT_IN, "2026-11-01T10:00:00+00:00", "SM-start")
    stop = ContactKeyword("sms", address, KeywordAction.OPT_OUT, "2026-11-02T10:00:00+00:00", "SM-stop")
    assert await feedback.keyword(start) and await feedback.keyword(stop)
    assert await _suppressed(store_pool, address)

    # The captured START, replayed later with a fresh receipt time: its message id was applied before.
    replayed = ContactKeyword("sms", address, KeywordAction.OPT_IN, "2026-11-30T10:00:00+00:00", "SM-start")
    assert not await feedback.keyword(replayed)
    assert await _suppressed(store_pool, address)

    # A new START (a new message) lifts it.
    assert await feedback.keyword(ContactKeyword("sms", address, KeywordAction.OPT_IN, "2026-12-01T10:00:00+00:00",
                                                 "SM-new-start"))
    assert not await _suppressed(store_pool, address)


async def test_an_older_keyword_than_the_last_applied_is_refused(store_pool: asyncpg.Pool) -> None:
    feedback, address = StoreFeedback(store_pool), f"h-{uuid.uuid4().hex[:8]}"
    assert await feedback.keyword(ContactKeyword("sms", address, KeywordAction.OPT_OUT, "2026-11-02T10:00:00+00:00",
                                                 "SM-2"))
    assert not await feedback.keyword(ContactKeyword("sms", address, KeywordAction.OPT_IN, "2026-11-01T10:00:00+00:00",
                                                     "SM-1"))
    assert await _suppressed(store_pool, address)


async def test_an_inbound_whatsapp_message_opens_its_customers_window_on_that_number_and_only_moves_it_forward(
        store_pool: asyncpg.Pool) -> None:
    feedback, store = StoreFeedback(store_pool), CustomerStore(store_pool)
    own, on_phone, other = (f"c-{uuid.uuid4().hex[:8]}" for _ in range(3))
    number, phone = f"+1555{uuid.uuid4().int % 10**7:07d}", f"+1556{uuid.uuid4().int % 10**7:07d}"
    await store.apply_profile_updates([
        ProfileWrite(own, ProfileUpdate("e1", "2026-11-01T00:00:00Z", whatsapp=number)),
        # No WhatsApp number of their own: WhatsApp goes to the phone, indexed as an SMS address.
        ProfileWrite(on_phone, ProfileUpdate("e2", "2026-11-01T00:00:00Z", phone=number)),
        ProfileWrite(other, ProfileUpdate("e3", "2026-11-01T00:00:00Z", whatsapp=phone))])
    wrote = InboundMessage(address_hash("whatsapp", number), address_hash("sms", number),
                           "2026-11-30T10:00:00+00:00", "twilio:SM1")

    assert await feedback.inbound(wrote) == 2
    assert await feedback.inbound(wrote) == 2  # redelivered: the same time again
    assert await feedback.inbound(replace(wrote, at="2026-11-29T10:00:00+00:00", report_id="twilio:SM0")) == 2
    at = datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert await store.last_whatsapp_inbound(own, wrote.address_hash) == at, "an older message moves nothing back"
    assert await store.last_whatsapp_inbound(on_phone, wrote.address_hash) == at
    assert await store.last_whatsapp_inbound(other, address_hash("whatsapp", phone)) is None
    assert await store.last_whatsapp_inbound(own, address_hash("whatsapp", phone)) is None, "per number"
    stranger = f"+1557{uuid.uuid4().int % 10**7:07d}"
    assert await feedback.inbound(InboundMessage(address_hash("whatsapp", stranger), address_hash("sms", stranger),
                                                 "2026-11-30T10:00:00+00:00")) == 0

    erased = await forget(store_pool, own)
    assert erased.whatsapp_windows == 1
    assert await store.last_whatsapp_inbound(own, wrote.address_hash) is None
