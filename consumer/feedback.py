"""The delivery-feedback topic: its record format, and applying its records to Temporal.

`eventflow webhooks` verifies a provider's request, turns it into `FeedbackMessage`s and writes
them to the feedback topic before answering the provider. `FeedbackConsumer` reads the topic
(at least once: a record's offset is committed only after it was applied) and applies each record:

* a report goes to the customer's ``CustomerPreferences`` (signal-with-start; the workflow
  deduplicates by ``report_id``, so a redelivered record or a provider's retry changes nothing
  twice), then to the sending journey as ``DELIVERY_SIGNAL`` (a journey already finished is
  skipped), and, for SMS and WhatsApp, tells the address's ``AddressContacts`` whose it is;
* a keyword (STOP / START) goes to the address's ``AddressContacts``, which forwards it to the
  customers of that address;
* an inbound WhatsApp message (any text) records, in the customer store, when the customers of
  that number last wrote: the 24-hour window for free-form messages (activities/whatsapp.py).
  Without a store nothing records it, and no window counts as open.

Records are JSON; the key is the customer id (reports) or the address (keywords, inbound
messages), so the reports of one customer, and the keywords of one address, stay in order. A
release before inbound records reads one as undecodable and skips it (only a window is lost).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.outcomes import DELIVERY_SIGNAL, DeliveryOutcome, DeliveryReport
from activities.whatsapp import InboundMessage
from consumer.kafka_loop import GroupSubscription, Handoff, KafkaLoop, LoopOptions
from consumer.record import SourceRecord
from core.errors import EventflowError
from core.vocabulary import PHONE_CHANNELS, ChannelName
from store.feedback import StoreFeedback
from workflows.address_book import (
    CONTACT_SEEN_SIGNAL,
    KEYWORD_SIGNAL,
    AddressContacts,
    AddressInput,
    ContactSeen,
    address_workflow_id,
)
from workflows.preferences import CustomerPreferences, PreferencesInput, preferences_workflow_id
from workflows.suppression import (
    CONTACT_KEYWORD_SIGNAL,
    DELIVERY_REPORT_SIGNAL,
    ContactKeyword,
    DeliveryFeedback,
    KeywordAction,
)

log = structlog.get_logger(__name__)

#: Channels whose addresses can send keywords back (Twilio inbound messages): those that send to phone numbers.
_KEYWORD_CHANNELS = PHONE_CHANNELS
#: Reports after which the address is known to belong to the customer.
_SEEN_OUTCOMES = frozenset({DeliveryOutcome.ACCEPTED, DeliveryOutcome.DELIVERED})

__all__ = ["CONTACT_KEYWORD_SIGNAL", "FeedbackApplier", "FeedbackConsumer", "FeedbackDecodeError",
           "FeedbackMessage", "FeedbackMetrics", "decode_message", "encode_message"]


class FeedbackDecodeError(EventflowError):
    """A feedback record is not one this version writes (kept with its raw bytes for the log)."""

    def __init__(self, problem: str, raw: bytes) -> None:
        super().__init__(f"undecodable feedback record: {problem}")
        self.problem = problem
        self.raw = raw


@dataclass(frozen=True)
class FeedbackMessage:
    """One record of the feedback topic: a report about a send, a keyword from an address, or an
    inbound WhatsApp message."""

    report: DeliveryFeedback | None = None
    keyword: ContactKeyword | None = None
    inbound: InboundMessage | None = None

    @property
    def key(self) -> str:
        if self.report is not None:
            return self.report.report.customer_id
        if self.inbound is not None:
            return address_workflow_id(ChannelName.WHATSAPP, self.inbound.address_hash)
        assert self.keyword is not None
        return address_workflow_id(self.keyword.channel, self.keyword.address_hash)


def encode_message(message: FeedbackMessage) -> bytes:
    """The record value (JSON)."""
    if message.report is not None:
        body: dict[str, Any] = {"kind": "report", "report": asdict(message.report.report),
                                "address_hash": message.report.address_hash}
    elif message.inbound is not None:
        body = {"kind": "inbound", **asdict(message.inbound)}
    else:
        assert message.keyword is not None
        body = {"kind": "keyword", **asdict(message.keyword)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_message(raw: bytes) -> FeedbackMessage:
    """Parses a record value; raises `FeedbackDecodeError` naming what is wrong."""
    try:
        body = json.loads(raw)
        match body:
            case {"kind": "report", "report": dict(report), "address_hash": str(address_hash)}:
                fields = {k: str(v) for k, v in report.items() if k in DeliveryReport.__dataclass_fields__}
                outcome = DeliveryOutcome(fields.pop("outcome"))
                return FeedbackMessage(report=DeliveryFeedback(DeliveryReport(outcome=outcome, **fields),
                                                               address_hash))
            case {"kind": "keyword", "channel": str(channel), "address_hash": str(address_hash),
                  "action": str(action), "at": str(at), "report_id": str(report_id)}:
                others = body.get("other_address_hashes", [])  # absent from records written before key rotation
                if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
                    raise ValueError("other_address_hashes must be a list of strings")
                return FeedbackMessage(keyword=ContactKeyword(channel, address_hash, KeywordAction(action), at,
                                                              report_id, others))
            case {"kind": "inbound", "address_hash": str(address_hash), "phone_hash": str(phone_hash),
                  "at": str(at), "report_id": str(report_id)}:
                return FeedbackMessage(inbound=InboundMessage(address_hash, phone_hash, at, report_id))
    except (ValueError, KeyError, TypeError) as exc:
        raise FeedbackDecodeError(f"{type(exc).__name__}: {exc}", raw) from exc
    raise FeedbackDecodeError("neither a report, a keyword nor an inbound message", raw)


class FeedbackMetrics:
    """Feedback records applied, by kind and result; bounded labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter("eventflow_feedback_records_total",
                               "Feedback records the consumer applied, by kind (report, keyword, inbound) and "
                               "result (applied, duplicate, unmatched, undecodable, retried).", ["kind", "result"], registry=registry)


class FeedbackApplier:
    """Applies one `FeedbackMessage` to Temporal; idempotent, so a redelivered record is harmless."""

    def __init__(self, client: Client, task_queue: str, metrics: FeedbackMetrics | None = None, *,
                 store: StoreFeedback | None = None) -> None:
        """``store``: the customer store; without it, reports and keywords go to per-customer workflows."""
        self._client = client
        self._task_queue = task_queue
        self._metrics = metrics or FeedbackMetrics(CollectorRegistry())
        self._store = store

    async def apply(self, message: FeedbackMessage) -> None:
        if message.report is not None:
            await self._report(message.report)
        elif message.keyword is not None:
            await self._keyword(message.keyword)
        elif message.inbound is not None:
            await self._inbound(message.inbound)

    async def _report(self, feedback: DeliveryFeedback) -> None:
        report = feedback.report
        if not report.customer_id or not report.idempotency_key:
            self._metrics.applied.labels("report", "unmatched").inc()
            return
        if self._store is not None:
            if not await self._store.report(feedback):
                self._metrics.applied.labels("report", "duplicate").inc()
                return
            await self._signal_journey(report)
            self._metrics.applied.labels("report", "applied").inc()
            return
        await self._client.start_workflow(
            CustomerPreferences.run, PreferencesInput(report.customer_id),
            id=preferences_workflow_id(report.customer_id), task_queue=self._task_queue,
            start_signal=DELIVERY_REPORT_SIGNAL, start_signal_args=[feedback])
        await self._signal_journey(report)
        if report.channel in _KEYWORD_CHANNELS and feedback.address_hash and report.outcome in _SEEN_OUTCOMES:
            await self._client.start_workflow(
                AddressContacts.run, AddressInput(report.channel, feedback.address_hash),
                id=address_workflow_id(report.channel, feedback.address_hash), task_queue=self._task_queue,
                start_signal=CONTACT_SEEN_SIGNAL, start_signal_args=[ContactSeen(report.customer_id)])
        self._metrics.applied.labels("report", "applied").inc()

    async def _signal_journey(self, report: DeliveryReport) -> None:
        """The sending journey hears of late failures (it may fall back to another channel)."""
        if report.workflow_id:
            try:
                await self._client.get_workflow_handle(report.workflow_id).signal(DELIVERY_SIGNAL, report)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise

    async def _keyword(self, keyword: ContactKeyword) -> None:
        if self._store is not None:
            applied = await self._store.keyword(keyword)
            self._metrics.applied.labels("keyword", "applied" if applied else "duplicate").inc()
            return
        await self._client.start_workflow(
            AddressContacts.run, AddressInput(keyword.channel, keyword.address_hash),
            id=address_workflow_id(keyword.channel, keyword.address_hash), task_queue=self._task_queue,
            start_signal=KEYWORD_SIGNAL, start_signal_args=[keyword])
        # Customers learned under an older key (or unkeyed) are known only to that form's workflow:
        # it forwards the keyword too, if it exists (none is started for an old form).
        for form in keyword.other_address_hashes:
            try:
                await self._client.get_workflow_handle(address_workflow_id(keyword.channel, form)).signal(
                    KEYWORD_SIGNAL, keyword)
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
        self._metrics.applied.labels("keyword", "applied").inc()


    async def _inbound(self, message: InboundMessage) -> None:
        # Without a store no send could read the window, so there is nowhere worth recording it.
        matched = await self._store.inbound(message) if self._store is not None else 0
        self._metrics.applied.labels("inbound", "applied" if matched else "unmatched").inc()


class _FeedbackHandoff(Handoff[FeedbackMessage | FeedbackDecodeError]):
    """Applies each record of a batch in order before the loop commits it."""

    def __init__(self, applier: FeedbackApplier, metrics: FeedbackMetrics, stop: asyncio.Event,
                 on_assigned: Callable[[], None] | None) -> None:
        self._applier = applier
        self._metrics = metrics
        self._stop = stop
        self._on_assigned = on_assigned

    def decode(self, record: SourceRecord) -> FeedbackMessage | FeedbackDecodeError:
        try:
            return decode_message(record.value)
        except FeedbackDecodeError as exc:
            return exc

    async def hand_off(self, records: Sequence[SourceRecord],
                       items: Sequence[FeedbackMessage | FeedbackDecodeError]) -> None:
        for item in items:
            match item:
                case FeedbackDecodeError() as error:
                    self._metrics.applied.labels("unknown", "undecodable").inc()
                    log.error("feedback_undecodable", problem=error.problem, size=len(error.raw))
                case FeedbackMessage() as message:
                    await self._apply_until_done(message)

    async def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        if self._on_assigned is not None:
            self._on_assigned()

    async def _apply_until_done(self, message: FeedbackMessage) -> None:
        delay = 0.2
        while True:
            try:
                await self._applier.apply(message)
                return
            except RPCError as err:
                log.warning("feedback_apply_retrying", status=str(err.status), delay_seconds=delay)
            except Exception as exc:  # noqa: BLE001 - applying is idempotent: try again rather than lose the record
                self._metrics.applied.labels("unknown", "retried").inc()
                log.error("feedback_apply_failed", error_type=type(exc).__name__, delay_seconds=delay)
            if self._stop.is_set():
                # The batch's hand-off fails, so none of its records is committed: they are applied again.
                raise asyncio.CancelledError("stopped before the feedback record was applied")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class FeedbackConsumer:
    """Reads the feedback topic on the shared `KafkaLoop` and applies each record, committing only what was applied.

    A Temporal outage is waited out (the record is applied again with back-off) rather than
    skipped: a report never lost is worth a paused topic.
    """

    def __init__(self, client_config: Mapping[str, str], topic: str, group_id: str, applier: FeedbackApplier, *,
                 metrics: FeedbackMetrics | None = None, batch_size: int = 100,
                 on_assigned: Callable[[], None] | None = None) -> None:
        self._client_config = dict(client_config)
        self._topic = topic
        self._group_id = group_id
        self._applier = applier
        self._metrics = metrics or FeedbackMetrics(CollectorRegistry())
        self._batch = batch_size
        self._on_assigned = on_assigned

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop`` is set; commits what was applied and closes the consumer (leaving the group)."""
        # The group keeps the client's default (eager) assignment: webhook replicas of an older
        # release in the same group must still find a common protocol during a rolling update.
        loop: KafkaLoop[FeedbackMessage | FeedbackDecodeError] = KafkaLoop(
            GroupSubscription((self._topic,), self._group_id),
            _FeedbackHandoff(self._applier, self._metrics, stop, self._on_assigned),
            LoopOptions(name="feedback", max_batch=self._batch, commit_interval_seconds=0.0),
            client_config=self._client_config)
        await loop.run(stop)
