"""Address hash keys rotate on the real customer store without losing a suppression, a STOP or its START."""

from __future__ import annotations

import base64
import random
import uuid

import asyncpg

from activities.addresses import AddressHasher
from activities.ledger import ReserveRequest
from activities.outcomes import ReserveDecision
from core.signing import SigningKeys
from store.feedback import StoreFeedback
from store.ledger import PostgresLedger
from workflows.suppression import ContactKeyword, KeywordAction

OLD = base64.b64encode(bytes(range(32))).decode()
NEW = base64.b64encode(bytes(range(64, 96))).decode()
UNKEYED = AddressHasher(None)  # what was written before keys were configured
FIRST = AddressHasher(SigningKeys.parse(f"2026-01={OLD}"))
ROTATED = AddressHasher(SigningKeys.parse(f"2026-01={OLD},2026-07={NEW}", "2026-07"))


def _phone() -> str:
    return f"+49151{random.randrange(10**7, 10**8)}"


def _keyword(hasher: AddressHasher, phone: str, action: KeywordAction, at: str) -> ContactKeyword:
    current, *others = hasher.forms("sms", phone)
    return ContactKeyword("sms", current, action, at, f"SM-{uuid.uuid4().hex[:8]}", others)


async def _reserve(pool: asyncpg.Pool, hasher: AddressHasher, phone: str) -> ReserveDecision:
    current, *others = hasher.forms("sms", phone)
    request = ReserveRequest(idempotency_key=f"wf/{uuid.uuid4().hex[:8]}", customer_id=f"c-{uuid.uuid4().hex[:8]}",
                             channel="sms", attempt=1, lease_seconds=30.0, now_epoch_seconds=1.0,
                             address_hash=current, other_address_hashes=others)
    return (await PostgresLedger(pool).reserve(request)).decision


async def test_a_stop_recorded_under_an_old_key_or_unkeyed_still_suppresses_after_rotation(
        store_pool: asyncpg.Pool) -> None:
    feedback = StoreFeedback(store_pool)
    for before in (UNKEYED, FIRST):
        phone = _phone()
        assert await feedback.keyword(_keyword(before, phone, KeywordAction.OPT_OUT, "2026-11-01T10:00:00+00:00"))
        stored = await store_pool.fetchval("SELECT address_hash FROM eventflow.suppressions WHERE channel = 'sms'"
                                           " AND address_hash = $1", before.hash("sms", phone))
        assert stored is not None and phone not in stored
        assert await _reserve(store_pool, ROTATED, phone) is ReserveDecision.SUPPRESSED
        # Without the old forms (what the send did before lookups tried every key), it would have gone out.
        only_new = AddressHasher(SigningKeys.parse(f"2026-07={NEW}"), legacy_reads=False)
        assert await _reserve(store_pool, only_new, phone) is ReserveDecision.SEND


async def test_a_start_after_rotation_lifts_a_stop_from_before_and_an_older_one_is_still_refused(
        store_pool: asyncpg.Pool) -> None:
    feedback, phone = StoreFeedback(store_pool), _phone()
    assert await feedback.keyword(_keyword(FIRST, phone, KeywordAction.OPT_OUT, "2026-11-02T10:00:00+00:00"))
    # A START older than the STOP, hashed under the new key, is ordered against the old key's STOP.
    assert not await feedback.keyword(_keyword(ROTATED, phone, KeywordAction.OPT_IN, "2026-11-01T10:00:00+00:00"))
    assert await _reserve(store_pool, ROTATED, phone) is ReserveDecision.SUPPRESSED
    assert await feedback.keyword(_keyword(ROTATED, phone, KeywordAction.OPT_IN, "2026-11-03T10:00:00+00:00"))
    assert await _reserve(store_pool, ROTATED, phone) is ReserveDecision.SEND
    # And a STOP now is written under the new key, named by its key id.
    assert await feedback.keyword(_keyword(ROTATED, phone, KeywordAction.OPT_OUT, "2026-11-04T10:00:00+00:00"))
    assert await store_pool.fetchval("SELECT address_hash FROM eventflow.suppressions WHERE channel = 'sms'"
                                     " AND address_hash = ANY($1::text[])", list(ROTATED.forms("sms", phone))) \
        == ROTATED.hash("sms", phone)
    assert ROTATED.hash("sms", phone).startswith("2026-07:")
