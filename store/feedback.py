"""Provider reports and inbound keywords applied to the customer store.

A delivery report marks its send's row as reported (which settles an uncertain send, see
`store.ledger`), moves the send's outcome only forward, and suppresses the address when the report
says so. An inbound STOP suppresses the address on its channel for every customer; START lifts it.
Each report id applies once, for good: the store keeps every provider report id and inbound message
id it applied (not a window of recent ones), so a captured START replayed after a later STOP changes
nothing however late it comes; a keyword older than the last one applied to the address is refused too.
An inbound WhatsApp message moves its customers' last-inbound time on that number forward (the
24-hour window of activities/whatsapp.py); applied again, it changes nothing.
"""

from __future__ import annotations

import asyncpg

from activities.outcomes import DeliveryOutcome
from activities.whatsapp import InboundMessage
from core.vocabulary import ChannelName
from store._time import instant
from store.funnel import record_delivery
from store.metrics import StatementKind, StoreMetrics, timed
from workflows.suppression import (
    ContactKeyword,
    DeliveryFeedback,
    KeywordAction,
    SuppressionReason,
    outcome_rank,
    suppression_reason,
)


class StoreFeedback:
    """Applies `DeliveryFeedback` and `ContactKeyword` in single transactions; idempotent."""

    def __init__(self, pool: asyncpg.Pool, metrics: StoreMetrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics

    async def report(self, feedback: DeliveryFeedback) -> bool:
        """Applies one report; False when its report id was applied before."""
        report = feedback.report
        async with timed(self._metrics, StatementKind.REPORT), self._pool.acquire() as conn, conn.transaction():
            if report.report_id and not await conn.fetchval(
                    "INSERT INTO eventflow.provider_reports (report_id, idempotency_key) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING RETURNING true", report.report_id, report.idempotency_key):
                return False
            row = await conn.fetchrow("SELECT outcome FROM eventflow.sends WHERE idempotency_key = $1 FOR UPDATE",
                                      report.idempotency_key)
            if row is not None:
                moved = outcome_rank(report.outcome) > outcome_rank(row["outcome"] or "")
                await conn.execute(
                    "UPDATE eventflow.sends SET reported_at = COALESCE(reported_at, now()),"
                    " provider_message_id = COALESCE(provider_message_id, NULLIF($2, '')),"
                    " outcome = CASE WHEN $3 THEN $4 ELSE outcome END,"
                    " outcome_at = CASE WHEN $3 THEN $5 ELSE outcome_at END, updated_at = now()"
                    " WHERE idempotency_key = $1", report.idempotency_key, report.provider_message_id, moved,
                    DeliveryOutcome(report.outcome).value, instant(report.at))
                await record_delivery(conn, report.idempotency_key, DeliveryOutcome(report.outcome).value)
            reason = suppression_reason(report)
            if reason is not None and feedback.address_hash:
                await conn.execute(
                    "INSERT INTO eventflow.suppressions (channel, address_hash, reason, report_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", report.channel, feedback.address_hash,
                    reason.value, report.report_id, instant(report.at))
        return True

    async def keyword(self, keyword: ContactKeyword) -> bool:
        """Applies one STOP/START; False for a repeat or a keyword older than the last applied."""
        at = instant(keyword.at)
        async with timed(self._metrics, StatementKind.KEYWORD), self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
                               f"{keyword.channel}:{keyword.address_hash}")
            # Every form of the address (older keys, the legacy hash): a START after a key rotation
            # is still ordered against, and lifts, a STOP recorded before it.
            forms = [keyword.address_hash, *keyword.other_address_hashes]
            last = await conn.fetchrow(
                "SELECT last_at, last_report_id FROM eventflow.keyword_changes"
                " WHERE channel = $1 AND address_hash = ANY($2::text[]) ORDER BY last_at DESC LIMIT 1",
                keyword.channel, forms)
            if last is not None and (at < last["last_at"] or keyword.report_id and
                                     keyword.report_id == last["last_report_id"]):
                return False
            # Every inbound message id is kept for good (not a window of recent ones): a captured,
            # signed START replayed after a later STOP is refused however late it comes.
            if keyword.report_id and not await conn.fetchval(
                    "INSERT INTO eventflow.provider_reports (report_id, idempotency_key) VALUES ($1, '')"
                    " ON CONFLICT DO NOTHING RETURNING true", f"keyword:{keyword.report_id}"):
                return False
            if keyword.action is KeywordAction.HELP:
                return True
            await conn.execute(
                "INSERT INTO eventflow.keyword_changes (channel, address_hash, last_at, last_report_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (channel, address_hash) DO UPDATE"
                " SET last_at = EXCLUDED.last_at, last_report_id = EXCLUDED.last_report_id",
                keyword.channel, keyword.address_hash, at, keyword.report_id)
            match keyword.action:
                case KeywordAction.OPT_OUT:
                    await conn.execute(
                        "INSERT INTO eventflow.suppressions (channel, address_hash, reason, report_id, created_at)"
                        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel, address_hash) DO UPDATE"
                        " SET reason = EXCLUDED.reason, report_id = EXCLUDED.report_id,"
                        " created_at = EXCLUDED.created_at", keyword.channel, keyword.address_hash,
                        SuppressionReason.STOP.value, keyword.report_id, at)
                case KeywordAction.OPT_IN:
                    await conn.execute("DELETE FROM eventflow.suppressions"
                                       " WHERE channel = $1 AND address_hash = ANY($2::text[])", keyword.channel, forms)
        return True

    async def inbound(self, message: InboundMessage) -> int:
        """Records an inbound WhatsApp message for every customer of its number; how many it matched.

        The number is matched in the address index as a ``whatsapp`` address or as an ``sms`` one
        (a customer without a WhatsApp number gets WhatsApp on their phone, `ContactPoints.address_for`);
        a number no customer has yet is not recorded. Rows are keyed by the WhatsApp address, the one
        the send activity asks about, so a window one number opened is never taken for another's.
        """
        async with timed(self._metrics, StatementKind.INBOUND):
            matched = await self._pool.fetchval(
                "WITH owners AS ("
                " SELECT a.customer_id FROM eventflow.address_index a WHERE a.channel = $1 AND a.address_hash = $2"
                " UNION SELECT a.customer_id FROM eventflow.address_index a WHERE a.channel = $3"
                " AND a.address_hash = $4),"
                " written AS (INSERT INTO eventflow.whatsapp_inbound (customer_id, address_hash, last_at)"
                " SELECT customer_id, $2, $5 FROM owners ON CONFLICT (customer_id, address_hash) DO UPDATE"
                " SET last_at = GREATEST(eventflow.whatsapp_inbound.last_at, EXCLUDED.last_at) RETURNING 1)"
                " SELECT count(*) FROM written", ChannelName.WHATSAPP.value, message.address_hash,
                ChannelName.SMS.value, message.phone_hash, instant(message.at))
        return int(matched or 0)
