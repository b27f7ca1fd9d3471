"""The journey catalog on its Kafka topic: a follower that keeps a live `Catalog`, and a writer.

The topic has one partition, so the log is one total order and "the end" is one offset. The
follower reads it from the beginning without a consumer group (``assign``, never a commit): every
process holds the whole catalog. Each record is trusted only once it is signed by a configured key
and its snapshot passes the checks of ``journeys validate`` (`journeys.catalog.read_record`). A
record that is not, or an entry that lost a revision race, is skipped, logged with its key and
offset, and counted in ``eventflow_catalog_invalid_entries_total{reason}``: no record stops the
follower, and a follower that stops anyway turns readiness not ready.

The writer reads the log to its end, makes the next entry, produces it and reads back to its
offset: the entry counts only if the catalog built from the log accepted it as its journey's next
revision (first in the log wins). If another writer got there first, it retries on the new end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from prometheus_client import CollectorRegistry, Counter, Gauge

from core.errors import EventflowError
from core.signing import SigningKeys
from journeys.catalog import (
    SIGNATURE_HEADER,
    Catalog,
    CatalogConflictError,
    CatalogEntry,
    CatalogEntryError,
    JourneyState,
    Rejection,
    RejectReason,
    decode_entry,
    encode_entry,
    journey_of_key,
    read_record,
    sign_record,
)

log = structlog.get_logger(__name__)

#: Topic configuration the writer creates the catalog topic with (docs/deploy.md, "Journey catalog topic").
TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "86400000", "retention.ms": "-1"}


class CatalogUnavailableError(EventflowError):
    """The catalog topic cannot be read (at start-up, or by a command); one line naming topic and cause."""

    def __init__(self, topic: str, address: str, cause: str) -> None:
        super().__init__(f"cannot read the journey catalog topic {topic!r} at {address}: {cause}")
        self.topic = topic
        self.address = address
        self.cause = cause


class CatalogWriteError(EventflowError):
    """An entry could not be written (the broker refused it, or every attempt lost a race)."""


class CatalogMetrics:
    """What the follower exports; ``reason`` is a `RejectReason` (``conflict``: a lost revision race, harmless)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.invalid_entries = Counter(
            "eventflow_catalog_invalid_entries_total",
            "Catalog records skipped, by reason: size, signature, depth, json, format, unsupported_version, field, "
            "key, snapshot, validation, error; or a lost revision race (conflict).", ["reason"], registry=registry)
        for reason in RejectReason:
            self.invalid_entries.labels(reason.value)  # zero from the start, so an alert sees the first increase
        self.entries = Counter("eventflow_catalog_entries_total", "Catalog entries applied.", registry=registry)
        self.journeys = Gauge("eventflow_catalog_journeys", "Journeys in the catalog, by state.", ["state"],
                              registry=registry)
        self.rejected_journeys = Gauge(
            "eventflow_catalog_rejected_journeys",
            "Journeys whose newest catalog record was skipped (they serve their last accepted version).",
            registry=registry)

    def observe(self, catalog: Catalog) -> None:
        states = [state for _, state in catalog.position().values()]
        for state in JourneyState:
            self.journeys.labels(state.value).set(states.count(state))
        self.rejected_journeys.set(len(catalog.rejections()))


def _signature(message: Message) -> bytes | None:
    headers = message.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == SIGNATURE_HEADER:
            return value if isinstance(value, bytes) else None
    return None


def trusted_entry(message: Message, keys: SigningKeys | None) -> CatalogEntry | Rejection:
    """The record's entry if it is signed and valid, else why not; CPU-bound, so readers run it off the loop.

    Never raises for a record's content: a failure this code did not foresee is a rejection too.
    """
    key, offset = message.key(), message.offset() or 0
    try:
        return read_record(key, message.value(), _signature(message), keys=keys)
    except CatalogEntryError as exc:
        return Rejection(journey_of_key(key), offset, exc.reason, exc.problem[:300])
    except Exception as exc:  # no record may stop a reader: it is skipped, counted and reported
        log.exception("catalog_entry_failed", offset=offset)
        return Rejection(journey_of_key(key), offset, RejectReason.ERROR, f"{type(exc).__name__}: {str(exc)[:300]}")


def fold_record(catalog: Catalog, message: Message, read: CatalogEntry | Rejection, topic: str,
                metrics: CatalogMetrics | None = None) -> bool:
    """Applies a record's `trusted_entry` to ``catalog`` if it is the journey's next revision; True if applied.

    A record that is not is skipped: counted (``metrics``), logged with its key, partition and
    offset, and noted on the catalog (`Catalog.reject`). Never raises for a record's content.
    """
    offset = message.offset() or 0
    if isinstance(read, Rejection):
        _reject(catalog, metrics, topic, message, read)
        return False
    try:
        catalog.apply(read)
    except CatalogConflictError as exc:
        if metrics is not None:
            metrics.invalid_entries.labels(RejectReason.CONFLICT.value).inc()
        log.warning("catalog_entry_conflict", topic=topic, partition=message.partition(), offset=offset,
                    journey=exc.journey_id, revision=exc.revision, expected=exc.expected)
        return False
    except Exception as exc:  # no record may stop a reader: it is skipped, counted and reported
        log.exception("catalog_entry_failed", topic=topic, offset=offset)
        _reject(catalog, metrics, topic, message, Rejection(journey_of_key(message.key()), offset, RejectReason.ERROR,
                                                            f"{type(exc).__name__}: {str(exc)[:300]}"))
        return False
    if metrics is not None:
        metrics.entries.inc()
    return True


def _reject(catalog: Catalog, metrics: CatalogMetrics | None, topic: str, message: Message,
            rejection: Rejection) -> None:
    key, reason = message.key(), rejection.reason
    catalog.reject(rejection)
    if metrics is not None:
        metrics.invalid_entries.labels(reason.value).inc()
    log.error("catalog_entry_rejected", topic=topic, partition=message.partition(), offset=rejection.offset,
              key=(key or b"")[:200].decode("utf-8", "replace"), reason=reason.value, error=rejection.problem)


def _reader_config(client_config: Mapping[str, str]) -> dict[str, object]:
    # A group id is required by the client, but the reader only assigns and never commits or joins.
    return {**client_config, "group.id": f"eventflow-catalog-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "log_level": 0}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class _Log:
    """The topic's one partition, read from the beginning; blocking calls, one thread at a time."""

    def __init__(self, client_config: Mapping[str, str], topic: str) -> None:
        self._config = dict(client_config)
        self.topic = topic
        self._consumer: Consumer | None = None

    @property
    def address(self) -> str:
        return self._config.get("bootstrap.servers", "?")

    def open(self, timeout_seconds: float) -> None:
        consumer = Consumer(_reader_config(self._config))
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout_seconds).topics.get(self.topic)
        except KafkaException as exc:
            consumer.close()
            raise CatalogUnavailableError(self.topic, self.address, _first_line(exc)) from exc
        cause: str | None = None
        if metadata is None or (metadata.error is not None
                                and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            cause = "it does not exist (create it with `eventflow journeys publish`)"
        elif metadata.error is not None:
            cause = metadata.error.str()
        elif not metadata.partitions:
            cause = "it has no partitions"
        if cause is not None:
            consumer.close()
            raise CatalogUnavailableError(self.topic, self.address, cause)
        assert metadata is not None
        if len(metadata.partitions) != 1:
            consumer.close()
            raise CatalogUnavailableError(self.topic, self.address, f"it has {len(metadata.partitions)} partitions; "
                                                                    "the catalog needs exactly one (one total order)")
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._consumer = consumer

    def end(self, timeout_seconds: float) -> int:
        assert self._consumer is not None
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=timeout_seconds,
                                                           cached=False)
        except KafkaException as exc:
            raise CatalogUnavailableError(self.topic, self.address, _first_line(exc)) from exc
        return int(high)

    def poll(self, timeout_seconds: float) -> tuple[list[Message], int | None]:
        """Records now available, and the end offset if the partition's end was reached."""
        assert self._consumer is not None
        records: list[Message] = []
        at_end: int | None = None
        for message in self._consumer.consume(500, timeout_seconds):
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end = (message.offset() or 0)
            elif error.fatal() or error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
                raise CatalogUnavailableError(self.topic, self.address, error.str())
            else:
                log.warning("catalog_consume_error", error=error.str())
        return records, at_end

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class CatalogFollower:
    """Keeps a `Catalog` built from the topic, live: `load` reads to the end, `run` follows it.

    ``on_change`` is called on the event loop with the catalog after every batch that changed it.
    """

    def __init__(self, client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                 metrics: CatalogMetrics | None = None, on_change: Callable[[Catalog], None] | None = None,
                 poll_seconds: float = 0.5) -> None:
        self._log = _Log(client_config, topic)
        self._keys = keys
        self.metrics = metrics or CatalogMetrics(CollectorRegistry())
        self.catalog = Catalog()
        self.on_change = on_change
        self._poll_seconds = poll_seconds
        self._next_offset = 0
        self._problem: str | None = None
        self._unrouted: str | None = None
        self._stopped: str | None = None
        #: More for readiness to show while ready (journeys refused by this process, `consumer.catalog_channels`).
        self.extra_note: Callable[[], str | None] | None = None

    @property
    def topic(self) -> str:
        return self._log.topic

    @property
    def name(self) -> str:
        """The background task's name."""
        return "journey-catalog"

    def position(self) -> dict[str, tuple[int, JourneyState]]:
        """Per journey, the version and state this process has seen."""
        return self.catalog.position()

    def problem(self) -> str | None:
        """Why the catalog is not being followed right now (readiness), or None."""
        return self._stopped or self._problem or self._unrouted

    def note(self) -> str | None:
        """What readiness shows while ready: journeys whose newest record was skipped, journeys this
        process refuses (`extra_note`), or None."""
        notes: list[str] = []
        rejections = self.catalog.rejections()
        if rejections:
            shown = "; ".join(f"{journey}: {r.describe()[:120]}" for journey, r in list(rejections.items())[:3])
            more = f" (+{len(rejections) - 3} more)" if len(rejections) > 3 else ""
            notes.append(f"journey catalog records skipped, the last accepted versions serve: {shown}{more}")
        extra = self.extra_note() if self.extra_note is not None else None
        if extra:
            notes.append(extra)
        return "; ".join(notes) or None

    def readiness(self) -> tuple[bool, str]:
        """Ready while the catalog is followed; the detail names skipped records (`note`)."""
        problem = self.problem()
        if problem is not None:
            return False, problem
        return True, self.note() or f"following at offset {self._next_offset}"

    async def load(self, timeout_seconds: float = 20.0) -> Catalog:
        """Reads the topic to its current end.

        Raises:
            CatalogUnavailableError: the topic is missing, unreadable, or not read to its end in time.
        """
        deadline = time.monotonic() + timeout_seconds
        await asyncio.to_thread(self._log.open, timeout_seconds)
        try:
            end = await asyncio.to_thread(self._log.end, timeout_seconds)
            while self._next_offset < end:
                if time.monotonic() > deadline:
                    raise CatalogUnavailableError(self.topic, self._log.address, f"not read to its end (offset {end}) "
                                                  f"within {timeout_seconds:.0f}s")
                records, at_end = await asyncio.to_thread(self._log.poll, 0.5)
                await self._apply(records)
                if at_end is not None:
                    self._next_offset = max(self._next_offset, at_end)
        except BaseException:
            await asyncio.to_thread(self._log.close)
            raise
        self.metrics.observe(self.catalog)
        log.info("catalog_loaded", topic=self.topic, offset=self._next_offset,
                 journeys=[f"{j}@v{v}:{s}" for j, (v, s) in self.position().items()])
        return self.catalog

    async def run(self, stop: asyncio.Event) -> None:
        """Follows the topic until ``stop``; a read failure is logged and retried, a bad record skipped.

        Should it end anyway before ``stop`` (a bug), readiness turns not ready: routing would
        otherwise go on silently with a catalog nobody updates.
        """
        try:
            while not stop.is_set():
                try:
                    records, _ = await asyncio.to_thread(self._log.poll, self._poll_seconds)
                except CatalogUnavailableError as exc:
                    # Routing goes on with the last catalog read; readiness says it is not current.
                    self._problem = f"journey catalog unreadable: {exc.cause}"
                    log.error("catalog_unreadable", topic=self.topic, error=exc.cause)
                    await _wait(stop, 2.0)
                    continue
                self._problem = None
                changed = await self._apply(records)
                if records:
                    self.metrics.observe(self.catalog)
                if changed:
                    log.info("catalog_changed", topic=self.topic, offset=self._next_offset,
                             journeys=[f"{j}@v{v}:{s}" for j, (v, s) in self.position().items()])
                    self._changed()
        except BaseException as exc:
            if not stop.is_set():
                self._stopped = f"journey catalog follower stopped: {type(exc).__name__}: {str(exc)[:200]}"
                log.error("catalog_follower_stopped", topic=self.topic, error=repr(exc)[:300])
            raise
        finally:
            if not stop.is_set() and self._stopped is None:
                self._stopped = "journey catalog follower stopped"
                log.error("catalog_follower_stopped", topic=self.topic)
            await asyncio.to_thread(self._log.close)

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self.catalog)
        except Exception as exc:  # the follower goes on; readiness says routing is not current
            self._unrouted = f"journey catalog change not applied: {type(exc).__name__}: {str(exc)[:200]}"
            log.exception("catalog_change_failed", topic=self.topic, offset=self._next_offset)
        else:
            self._unrouted = None

    async def _apply(self, records: list[Message]) -> bool:
        # Checking a record test-renders templates: off the loop, so polling and probes go on meanwhile.
        reads = await asyncio.to_thread(lambda: [trusted_entry(message, self._keys) for message in records])
        changed = False
        for message, read in zip(records, reads, strict=True):
            self._next_offset = (message.offset() or 0) + 1
            changed = fold_record(self.catalog, message, read, self.topic, self.metrics) or changed
        return changed


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def read_catalog(client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                 timeout_seconds: float = 20.0) -> tuple[Catalog, int]:
    """The catalog (skipped records noted on it) and the offset after its last record; blocking (commands)."""
    reader = _Log(client_config, topic)
    reader.open(timeout_seconds)
    catalog = Catalog()
    next_offset = 0
    try:
        end = reader.end(timeout_seconds)
        deadline = time.monotonic() + timeout_seconds
        while next_offset < end:
            if time.monotonic() > deadline:
                raise CatalogUnavailableError(topic, reader.address, f"not read to its end within {timeout_seconds:.0f}s")
            records, at_end = reader.poll(0.5)
            for message in records:
                next_offset = (message.offset() or 0) + 1
                # A command reads past skipped records as the follower does.
                fold_record(catalog, message, trusted_entry(message, keys), topic)
            if at_end is not None:
                next_offset = max(next_offset, at_end)
    finally:
        reader.close()
    return catalog, next_offset


class CatalogWriter:
    """Writes entries with the read-to-end, produce, read-back guard (module docstring); blocking."""

    def __init__(self, client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                 timeout_seconds: float = 20.0) -> None:
        """``keys`` sign every entry written and verify every entry read; None: unsigned (development)."""
        self._config = dict(client_config)
        self.topic = topic
        self._keys = keys
        self._timeout = timeout_seconds

    def ensure_topic(self) -> None:
        """Creates the topic (one partition, compacted) if it is missing; an existing one is left alone."""
        admin = AdminClient({**self._config, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise CatalogUnavailableError(self.topic, self._config.get("bootstrap.servers", "?"),
                                          _first_line(exc)) from exc
        if self.topic in metadata.topics:
            return
        replicas = min(3, len(metadata.brokers))
        config = {**TOPIC_CONFIG, "min.insync.replicas": str(min(2, replicas))}
        future = admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=replicas,
                                               config=config)], operation_timeout=self._timeout)[self.topic]
        try:
            future.result(timeout=self._timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise CatalogWriteError(f"cannot create the catalog topic {self.topic!r}: {_first_line(exc)}") from exc
        # Creation returns before every broker knows the topic; readers started next must find it.
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            found = admin.list_topics(self.topic, timeout=self._timeout).topics.get(self.topic)
            if found is not None and found.error is None and found.partitions and found.partitions[0].leader >= 0:
                break
            time.sleep(0.1)
        log.info("catalog_topic_created", topic=self.topic, replicas=replicas)

    def topic_config(self) -> dict[str, str]:
        """The topic's effective configuration (for ``eventflow journeys list``' header and the tests)."""
        admin = AdminClient({**self._config, "log_level": 0})
        resource = ConfigResource(ConfigResource.Type.TOPIC, self.topic)
        described = admin.describe_configs([resource])[resource].result(timeout=self._timeout)
        return {name: str(entry.value) for name, entry in described.items()}

    def read(self) -> Catalog:
        return read_catalog(self._config, self.topic, keys=self._keys, timeout_seconds=self._timeout)[0]

    def write(self, make: Callable[[Catalog], CatalogEntry | None], *, attempts: int = 5) -> CatalogEntry | None:
        """Writes ``make(catalog)`` on the catalog as of the log's end; None when ``make`` says nothing changes.

        Raises:
            CatalogWriteError: the broker refused the record, or ``attempts`` writes each lost a race.
            CatalogError: ``make`` refused the change.
        """
        producer = Producer({**self._config, "acks": "all", "enable.idempotence": True, "log_level": 0})
        for _ in range(attempts):
            catalog = self.read()
            entry = make(catalog)
            if entry is None:
                return None
            _check_readable(entry)
            offset = self._produce(producer, entry)
            settled, end = read_catalog(self._config, self.topic, keys=self._keys, timeout_seconds=self._timeout)
            if end <= offset:
                raise CatalogWriteError(f"entry written at offset {offset} but the log ends at {end}")
            # Accepted iff the log's own fold took this very write as the revision.
            history = settled.history(entry.journey_id)
            if len(history) >= entry.revision and history[entry.revision - 1].entry_id == entry.entry_id:
                return entry
            log.warning("catalog_write_lost_race", journey=entry.journey_id, revision=entry.revision)
        raise CatalogWriteError(f"{attempts} attempts to write to {self.topic!r} each lost to a concurrent writer")

    def _produce(self, producer: Producer, entry: CatalogEntry) -> int:
        key, value = encode_entry(entry)
        headers: list[tuple[str, str | bytes | None]] = (
            [] if self._keys is None else [(SIGNATURE_HEADER, sign_record(key, value, self._keys).encode())])
        outcome: list[tuple[KafkaError | None, int]] = []
        producer.produce(self.topic, value=value, key=key, partition=0, headers=headers,
                         on_delivery=lambda err, msg: outcome.append((err, (msg.offset() or 0) if msg else -1)))
        remaining = producer.flush(self._timeout)
        if remaining or not outcome:
            raise CatalogWriteError(f"the catalog entry was not acknowledged within {self._timeout:.0f}s")
        error, offset = outcome[0]
        if error is not None:
            raise CatalogWriteError(f"the broker refused the catalog entry: {error.str()}")
        return offset


def _check_readable(entry: CatalogEntry) -> None:
    """Refuses an entry readers would skip (a copy of content an older release accepted, say)."""
    try:
        decode_entry(*encode_entry(entry))
    except CatalogEntryError as exc:
        raise CatalogWriteError(f"refusing to write {entry.journey_id} rev {entry.revision}: readers would skip "
                                f"it ({exc.reason.value}: {exc.problem})") from exc


__all__ = ["CatalogFollower", "CatalogMetrics", "CatalogUnavailableError", "CatalogWriteError", "CatalogWriter",
           "TOPIC_CONFIG", "fold_record", "read_catalog", "trusted_entry"]
