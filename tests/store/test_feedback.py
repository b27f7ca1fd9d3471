"""Provider reports and STOP/START on the customer store: each id applies once, for good."""

from __future__ import annotations

import uuid

import asyncpg

from store.feedback import StoreFeedback
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
