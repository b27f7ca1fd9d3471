"""The send ledger on the real PostgreSQL server: leases, the call mark, caps under concurrency."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from activities.caps import CapSet
from activities.ledger import Completion, ReserveRequest
from activities.outcomes import LedgerState, ReserveDecision
from store.ledger import PostgresLedger


def _request(key: str, customer: str, attempt: int = 1, **options: object) -> ReserveRequest:
    return ReserveRequest(idempotency_key=key, customer_id=customer, channel="email", attempt=attempt,
                          lease_seconds=30.0, now_epoch_seconds=1.0, **options)  # type: ignore[arg-type]


async def _expire_lease(pool: asyncpg.Pool, key: str) -> None:
    # The lease's end is the database's clock; moving it back forces expiry without waiting.
    await pool.execute("UPDATE eventflow.sends SET lease_until = now() - interval '1 second' WHERE idempotency_key = $1",
                       key)


async def test_a_lease_fences_other_attempts_and_a_delivery_is_final(store_pool: asyncpg.Pool) -> None:
    ledger, customer, key = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}", "wf/step"
    assert (await ledger.reserve(_request(key, customer))).decision is ReserveDecision.SEND
    busy = await ledger.reserve(_request(key, customer, attempt=2))
    assert busy.decision is ReserveDecision.BUSY and busy.not_before
    await ledger.complete(Completion(key, customer, "email", LedgerState.DELIVERED, "sendgrid", "m-1", attempt=1))
    again = await ledger.reserve(_request(key, customer, attempt=3))
    assert (again.decision, again.provider, again.provider_message_id) == (ReserveDecision.DELIVERED, "sendgrid", "m-1")


async def test_an_expired_lease_without_the_call_mark_is_not_uncertain(store_pool: asyncpg.Pool) -> None:
    ledger, customer, key = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}", "wf/unmarked"
    await ledger.reserve(_request(key, customer))
    await _expire_lease(store_pool, key)
    second = await ledger.reserve(_request(key, customer, attempt=2))
    assert second.decision is ReserveDecision.SEND and not second.previous_attempt_uncertain


async def test_an_expired_lease_after_the_call_mark_is_uncertain(store_pool: asyncpg.Pool) -> None:
    ledger, customer, key = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}", "wf/marked"
    await ledger.reserve(_request(key, customer))
    assert await ledger.mark_calling(key, 1)
    await _expire_lease(store_pool, key)
    second = await ledger.reserve(_request(key, customer, attempt=2))
    assert second.decision is ReserveDecision.SEND and second.previous_attempt_uncertain
    # The old attempt lost the lease: it may not mark a call any more.
    assert not await ledger.mark_calling(key, 1)


async def test_a_released_lease_lets_the_next_attempt_send_at_once(store_pool: asyncpg.Pool) -> None:
    ledger, customer, key = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}", "wf/released"
    await ledger.reserve(_request(key, customer))
    await ledger.release(key, 1)
    second = await ledger.reserve(_request(key, customer, attempt=2))
    assert second.decision is ReserveDecision.SEND and not second.previous_attempt_uncertain


async def test_a_fenced_out_attempt_cannot_release_a_newer_lease(store_pool: asyncpg.Pool) -> None:
    ledger, customer, key = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}", "wf/fenced"
    await ledger.reserve(_request(key, customer))
    await _expire_lease(store_pool, key)
    await ledger.reserve(_request(key, customer, attempt=2))
    await ledger.complete(Completion(key, customer, "email", LedgerState.RETRYING, attempt=1))
    await ledger.release(key, 1)
    row = await ledger.send(key)
    assert row is not None and (row.state, row.lease_attempt) == (LedgerState.IN_FLIGHT, 2)
    assert (await ledger.reserve(_request(key, customer, attempt=3))).decision is ReserveDecision.BUSY


async def test_fifty_concurrent_sends_to_one_customer_take_exactly_the_cap(store_pool: asyncpg.Pool) -> None:
    ledger, customer = PostgresLedger(store_pool), f"hot-{uuid.uuid4().hex[:8]}"
    caps = str(CapSet.parse("email:day=3"))
    answers = await asyncio.gather(*(ledger.reserve(_request(f"wf-{n}/s", customer, caps=caps, cap_reserve=0))
                                     for n in range(50)))
    decisions = [answer.decision for answer in answers]
    assert decisions.count(ReserveDecision.SEND) == 3
    assert decisions.count(ReserveDecision.CAPPED) == 47


async def test_completions_racing_reservations_never_let_more_than_the_cap_hold_a_slot(
        store_pool: asyncpg.Pool) -> None:
    # Completions take no customer lock: a failure freeing a slot lands wholly before or after a
    # reservation's read, so the cap holds however the two interleave.
    ledger, customer = PostgresLedger(store_pool), f"hot-{uuid.uuid4().hex[:8]}"
    caps = str(CapSet.parse("email:day=3"))
    first = [f"wf-first-{n}/s" for n in range(3)]
    for key in first:
        assert (await ledger.reserve(_request(key, customer, caps=caps, cap_reserve=0))).decision \
            is ReserveDecision.SEND
    completions = [ledger.complete(Completion(key, customer, "email", LedgerState.FAILED, "sendgrid",
                                              error_type="Rejected", attempt=1)) for key in first[:2]]
    completions.append(ledger.complete(Completion(first[2], customer, "email", LedgerState.DELIVERED, "sendgrid",
                                                  "m-1", attempt=1)))
    reservations = [ledger.reserve(_request(f"wf-later-{n}/s", customer, caps=caps, cap_reserve=0))
                    for n in range(30)]
    *_, answers = await asyncio.gather(asyncio.gather(*completions), asyncio.gather(*reservations))

    later = [answer.decision for answer in answers]
    assert set(later) <= {ReserveDecision.SEND, ReserveDecision.CAPPED}
    holding = [row for row in await ledger.sends_of(customer) if row.state.holds_cap_slot]
    assert len(holding) == 3 - 2 + later.count(ReserveDecision.SEND) <= 3
    assert (await ledger.send(first[2])).state is LedgerState.DELIVERED  # type: ignore[union-attr]


async def test_opt_out_and_suppression_are_checked_before_anything_else(store_pool: asyncpg.Pool) -> None:
    ledger, customer = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}"
    await ledger.complete(Completion("wf/unsub", customer, "email", LedgerState.FAILED,
                                     error_type="RecipientUnsubscribed"))
    assert (await ledger.reserve(_request("wf/next", customer))).decision is ReserveDecision.OPTED_OUT
    other = f"c-{uuid.uuid4().hex[:8]}"
    await store_pool.execute("INSERT INTO eventflow.suppressions (channel, address_hash, reason, created_at)"
                             " VALUES ('email', 'h-1', 'hard_bounce', now())")
    assert (await ledger.reserve(_request("wf/supp", other, address_hash="h-1"))).decision \
        is ReserveDecision.SUPPRESSED


async def test_failover_records_each_call_s_provider_and_an_unavailable_answer_before_the_next_mark(
        store_pool: asyncpg.Pool) -> None:
    ledger, customer = PostgresLedger(store_pool), f"c-{uuid.uuid4().hex[:8]}"
    # Stopped after the first provider's "unavailable" was recorded, before the second's mark: nothing left.
    answered = f"wf/{uuid.uuid4().hex[:8]}"
    await ledger.reserve(_request(answered, customer))
    assert await ledger.mark_calling(answered, 1, "sendgrid")
    assert await ledger.record_unavailable(answered, 1, 30.0)
    row = await ledger.send(answered)
    assert row is not None and (row.state, row.called, row.provider) == (LedgerState.IN_FLIGHT, False, "sendgrid")
    await _expire_lease(store_pool, answered)
    after = await ledger.reserve(_request(answered, customer, attempt=2))
    assert after.decision is ReserveDecision.SEND and not after.previous_attempt_uncertain
    # Stopped after the second provider's mark: uncertain, and at that provider.
    marked = f"wf/{uuid.uuid4().hex[:8]}"
    await ledger.reserve(_request(marked, customer))
    assert await ledger.mark_calling(marked, 1, "sendgrid")
    assert await ledger.record_unavailable(marked, 1, 30.0)
    assert await ledger.mark_calling(marked, 1, "smtp")
    await _expire_lease(store_pool, marked)
    later = await ledger.reserve(_request(marked, customer, attempt=2))
    assert (later.previous_attempt_uncertain, later.previous_provider) == (True, "smtp")
    # The fenced-out attempt can neither record an answer nor renew the lease it lost.
    assert not await ledger.record_unavailable(marked, 1, 30.0)
