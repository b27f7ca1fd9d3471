"""The journey catalog on its Kafka topic: a follower that keeps a live `Catalog`, and a writer.

The topic has one partition, so the log is one total order and "the end" is one offset. The
follower reads it from the beginning without a consumer group (``assign``, never a commit): every
process holds the whole catalog. Each record is trusted only once it is signed by a configured key
and its snapshot passes the checks of ``journeys validate`` (`journeys.catalog.read_record`). A
record that is not, or an entry that lost a revision race, is skipped, logged with its key and
offset, and counted in ``eventflow_catalog_invalid_entries_total{reason}``: no record stops the
follower, and a follower that stops anyway turns readiness not ready.

Segment entries share the topic (`journeys.segment_catalog`, keys ``segment:<id>/...``): the
follower folds them into its `SegmentCatalog` beside the journeys' `Catalog`, with the same checks
and the same counting of skipped records, and tells ``on_segments_change`` which segments changed.

The writer reads the log to its end, makes the next entry, produces it and reads back to its
offset: the entry counts only if the catalog built from the log accepted it as its journey's next
revision (first in the log wins). If another writer got there first, it retries on the new end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumer.kafka_loop import FixedAssignment, Handoff, KafkaLoop, KafkaReadError, LoopOptions, run_blocking
from consumer.record import SourceRecord
from core.errors import EventflowError
from core.signing import SigningKeys
from journeys.catalog import (
    SIGNATURE_HEADER,
    Catalog,
    CatalogConflictError,
    CatalogEntry,
    CatalogEntryError,
    EntryKind,
    JourneyState,
    Rejection,
    RejectReason,
    decode_entry,
    encode_entry,
    journey_of_key,
    kind_of_key,
    read_record,
    sign_record,
)
from journeys.segment_catalog import (
    SegmentCatalog,
    SegmentConflictError,
    SegmentEntry,
    decode_segment_entry,
    encode_segment_entry,
    read_segment_record,
    segment_of_key,
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
        self.segments = Gauge("eventflow_catalog_segments", "Segments in the catalog.", registry=registry)
        self.rejected_segments = Gauge(
            "eventflow_catalog_rejected_segments",
            "Segments whose newest catalog record was skipped (they keep their last accepted version).",
            registry=registry)

    def observe(self, catalog: Catalog, segments: SegmentCatalog | None = None) -> None:
        states = [state for _, state in catalog.position().values()]
        for state in JourneyState:
            self.journeys.labels(state.value).set(states.count(state))
        self.rejected_journeys.set(len(catalog.rejections()))
        if segments is not None:
            self.segments.set(len(segments.segment_ids))
            self.rejected_segments.set(len(segments.rejections()))


def _signature(record: SourceRecord) -> bytes | None:
    for name, value in record.headers:
        if name == SIGNATURE_HEADER:
            return value if isinstance(value, bytes) else None
    return None


#: What a catalog record read as: a journey entry, a segment entry, or why it is skipped.
Read = CatalogEntry | SegmentEntry | Rejection


def trusted_entry(record: SourceRecord, keys: SigningKeys | None) -> Read:
    """The record's entry if it is signed and valid, else why not; CPU-bound, so readers run it off the loop.

    The key names the kind (`journeys.catalog.kind_of_key`); a kind this release does not know is
    a newer release's, skipped as ``unsupported_version`` unread. Never raises for a record's content:
    a failure this code did not foresee is a rejection too.
    """
    key, offset = record.key, record.offset
    try:
        match kind_of_key(key):
            case EntryKind.JOURNEY:
                return read_record(key, record.value, _signature(record), keys=keys)
            case EntryKind.SEGMENT:
                return read_segment_record(key, record.value, _signature(record), keys=keys)
            case None:
                head = (key or b"").split(b"/", 1)[0][:60].decode("utf-8", "replace")
                return Rejection("", offset, RejectReason.UNSUPPORTED_VERSION,
                                 f"the key {head!r} names an entry kind this release does not know")
    except CatalogEntryError as exc:
        return Rejection(journey_of_key(key), offset, exc.reason, exc.problem[:300])
    except Exception as exc:  # no record may stop a reader: it is skipped, counted and reported
        log.exception("catalog_entry_failed", offset=offset)
        return Rejection(journey_of_key(key), offset, RejectReason.ERROR, f"{type(exc).__name__}: {str(exc)[:300]}")


def fold_record(catalog: Catalog, record: SourceRecord, read: Read, topic: str,
                metrics: CatalogMetrics | None = None, segments: SegmentCatalog | None = None) -> bool:
    """Applies a record's `trusted_entry` to ``catalog`` (a segment's to ``segments``) if it is the next
    revision of its journey or segment; True if applied.

    A record that is not is skipped: counted (``metrics``), logged with its key, partition and
    offset, and noted on the catalog (`Catalog.reject`, `SegmentCatalog.reject`). Without
    ``segments``, segment entries are passed over (a reader that does not use them). Never raises
    for a record's content.
    """
    offset = record.offset
    try:
        match read:
            case Rejection():
                _reject(catalog, segments, metrics, topic, record, read)
                return False
            case SegmentEntry():
                if segments is None:
                    return False
                segments.apply(read)
            case CatalogEntry():
                catalog.apply(read)
    except (CatalogConflictError, SegmentConflictError) as exc:
        if metrics is not None:
            metrics.invalid_entries.labels(RejectReason.CONFLICT.value).inc()
        subject = {"journey": exc.journey_id} if isinstance(exc, CatalogConflictError) else {"segment": exc.segment_id}
        log.warning("catalog_entry_conflict", topic=topic, partition=record.partition, offset=offset,
                    revision=exc.revision, expected=exc.expected, **subject)
        return False
    except Exception as exc:  # no record may stop a reader: it is skipped, counted and reported
        log.exception("catalog_entry_failed", topic=topic, offset=offset)
        _reject(catalog, segments, metrics, topic, record, Rejection(
            journey_of_key(record.key), offset, RejectReason.ERROR, f"{type(exc).__name__}: {str(exc)[:300]}"))
        return False
    if metrics is not None:
        metrics.entries.inc()
    return True


def _reject(catalog: Catalog, segments: SegmentCatalog | None, metrics: CatalogMetrics | None, topic: str,
            record: SourceRecord, rejection: Rejection) -> None:
    key, reason = record.key, rejection.reason
    if kind_of_key(key) is EntryKind.SEGMENT:
        if segments is not None:
            segments.reject(segment_of_key(key), rejection)
    else:
        catalog.reject(rejection)
    if metrics is not None:
        metrics.invalid_entries.labels(reason.value).inc()
    log.error("catalog_entry_rejected", topic=topic, partition=record.partition, offset=rejection.offset,
              key=(key or b"")[:200].decode("utf-8", "replace"), reason=reason.value, error=rejection.problem)


#: librdkafka settings of a catalog reader beyond the loop's: its own lines stay quiet (commands print).
_READER_CONFIG: dict[str, object] = {"log_level": 0}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _address(client_config: Mapping[str, str]) -> str:
    return client_config.get("bootstrap.servers", "?")


def _check_topic(client_config: Mapping[str, str], topic: str, timeout_seconds: float) -> None:
    """Blocking: the topic exists with exactly one partition, else `CatalogUnavailableError` saying why."""
    # A consumer's metadata request never creates the topic (an admin or producer one may, on brokers that
    # auto-create), so a missing topic is reported as missing.
    probe = Consumer({**client_config, "group.id": "eventflow-catalog-probe", "log_level": 0})
    try:
        metadata = probe.list_topics(topic, timeout=timeout_seconds).topics.get(topic)
    except KafkaException as exc:
        raise CatalogUnavailableError(topic, _address(client_config), _first_line(exc)) from exc
    finally:
        probe.close()
    cause: str | None = None
    if metadata is None or (metadata.error is not None and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        cause = "it does not exist (create it with `eventflow journeys publish`)"
    elif metadata.error is not None:
        cause = metadata.error.str()
    elif not metadata.partitions:
        cause = "it has no partitions"
    elif len(metadata.partitions) != 1:
        cause = f"it has {len(metadata.partitions)} partitions; the catalog needs exactly one (one total order)"
    if cause is not None:
        raise CatalogUnavailableError(topic, _address(client_config), cause)


class _Fold(Handoff[SourceRecord]):
    """Hands each batch of the catalog topic to its follower (`CatalogFollower._apply`)."""

    def __init__(self, apply: Callable[[list[SourceRecord]], Awaitable[object]]) -> None:
        self._apply = apply
        self.end: int | None = None

    def decode(self, record: SourceRecord) -> SourceRecord:
        return record  # checked in `hand_off`, off the loop and a batch at a time

    async def hand_off(self, records: Sequence[SourceRecord], items: Sequence[SourceRecord]) -> None:
        await self._apply(list(items))

    def reached_end(self, partition: tuple[str, int], offset: int) -> None:
        self.end = offset


class CatalogFollower:
    """Keeps a `Catalog` built from the topic, live: `load` reads to the end, `run` follows it.

    Both read on the shared `KafkaLoop` (a fixed assignment of the one partition, no group).
    ``on_change`` is called on the event loop with the catalog after every batch that changed its
    journeys; ``on_segments_change`` with the segments and the ids of those that changed.
    """

    def __init__(self, client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                 metrics: CatalogMetrics | None = None, on_change: Callable[[Catalog], None] | None = None,
                 poll_seconds: float = 0.5) -> None:
        self._config = dict(client_config)
        self._topic = topic
        self._keys = keys
        self.metrics = metrics or CatalogMetrics(CollectorRegistry())
        self.catalog = Catalog()
        self.segments = SegmentCatalog()
        self.on_change = on_change
        self.on_segments_change: Callable[[SegmentCatalog, frozenset[str]], None] | None = None
        self._poll_seconds = poll_seconds
        self._next_offset = 0
        self._problem: str | None = None
        self._unrouted: str | None = None
        self._unsegmented: str | None = None
        self._stopped: str | None = None
        #: More for readiness to show while ready (journeys refused by this process, `consumer.catalog_channels`).
        self.extra_note: Callable[[], str | None] | None = None

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def name(self) -> str:
        """The background task's name."""
        return "journey-catalog"

    def position(self) -> dict[str, tuple[int, JourneyState]]:
        """Per journey, the version and state this process has seen."""
        return self.catalog.position()

    def problem(self) -> str | None:
        """Why the catalog is not being followed right now (readiness), or None."""
        return self._stopped or self._problem or self._unrouted or self._unsegmented

    def note(self) -> str | None:
        """What readiness shows while ready: journeys whose newest record was skipped, journeys this
        process refuses (`extra_note`), or None."""
        notes: list[str] = []
        rejections = self.catalog.rejections()
        if rejections:
            shown = "; ".join(f"{journey}: {r.describe()[:120]}" for journey, r in list(rejections.items())[:3])
            more = f" (+{len(rejections) - 3} more)" if len(rejections) > 3 else ""
            notes.append(f"journey catalog records skipped, the last accepted versions serve: {shown}{more}")
        skipped = self.segments.rejections()
        if skipped:
            shown = "; ".join(f"{segment}: {r.describe()[:120]}" for segment, r in list(skipped.items())[:3])
            more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
            notes.append(f"segment catalog records skipped, the last accepted versions apply: {shown}{more}")
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

    def _reader(self, fold: _Fold, options: LoopOptions) -> KafkaLoop[SourceRecord]:
        return KafkaLoop(FixedAssignment({(self._topic, 0): self._next_offset}, _READER_CONFIG), fold, options,
                         client_config=self._config)

    async def load(self, timeout_seconds: float = 20.0) -> Catalog:
        """Reads the topic to its current end.

        Raises:
            CatalogUnavailableError: the topic is missing, unreadable, or not read to its end in time.
        """
        await asyncio.to_thread(_check_topic, self._config, self._topic, timeout_seconds)
        fold = _Fold(self._apply)
        reader = self._reader(fold, LoopOptions(name="catalog-load", stop_at_end=True,
                                                idle_timeout_seconds=timeout_seconds))
        await _read_to_end(reader, self._topic, self._config, timeout_seconds)
        if fold.end is not None:
            self._next_offset = max(self._next_offset, fold.end)
        self.metrics.observe(self.catalog, self.segments)
        log.info("catalog_loaded", topic=self.topic, offset=self._next_offset,
                 journeys=[f"{j}@v{v}:{s}" for j, (v, s) in self.position().items()],
                 segments=[f"{s}@v{v}" for s, v in self.segments.position().items()])
        return self.catalog

    async def run(self, stop: asyncio.Event) -> None:
        """Follows the topic until ``stop``; a read failure is logged and retried, a bad record skipped.

        Should it end anyway before ``stop`` (a bug), readiness turns not ready: routing would
        otherwise go on silently with a catalog nobody updates.
        """
        try:
            while not stop.is_set():
                fold = _Fold(self._followed)
                # A reader that fails starts again from the next offset to read.
                reader = self._reader(fold, LoopOptions(name="catalog-follower",
                                                        poll_timeout_seconds=self._poll_seconds))
                try:
                    await reader.run(stop)
                except KafkaReadError as exc:
                    # Routing goes on with the last catalog read; readiness says it is not current.
                    self._problem = f"journey catalog unreadable: {exc.problem}"
                    log.error("catalog_unreadable", topic=self.topic, error=exc.problem)
                    await _wait(stop, 2.0)
        except BaseException as exc:
            if not stop.is_set():
                self._stopped = f"journey catalog follower stopped: {type(exc).__name__}: {str(exc)[:200]}"
                log.error("catalog_follower_stopped", topic=self.topic, error=repr(exc)[:300])
            raise
        finally:
            if not stop.is_set() and self._stopped is None:
                self._stopped = "journey catalog follower stopped"
                log.error("catalog_follower_stopped", topic=self.topic)

    async def _followed(self, records: list[SourceRecord]) -> None:
        self._problem = None
        journeys, segments = await self._apply(records)
        if records:
            self.metrics.observe(self.catalog, self.segments)
        if journeys or segments:
            log.info("catalog_changed", topic=self.topic, offset=self._next_offset,
                     journeys=[f"{j}@v{v}:{s}" for j, (v, s) in self.position().items()],
                     segments=[f"{s}@v{v}" for s, v in self.segments.position().items()])
        if journeys:
            self._changed()
        if segments:
            self._segments_changed(frozenset(segments))

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

    def _segments_changed(self, changed: frozenset[str]) -> None:
        if self.on_segments_change is None:
            return
        try:
            self.on_segments_change(self.segments, changed)
        except Exception as exc:  # the follower goes on; readiness says membership is not current
            self._unsegmented = f"segment catalog change not applied: {type(exc).__name__}: {str(exc)[:200]}"
            log.exception("catalog_segments_change_failed", topic=self.topic, offset=self._next_offset)
        else:
            self._unsegmented = None

    async def _apply(self, records: list[SourceRecord]) -> tuple[bool, set[str]]:
        """Folds ``records``; whether journeys changed, and which segments did."""
        # Checking a record test-renders templates: off the loop, so polling and probes go on meanwhile.
        reads = await asyncio.to_thread(lambda: [trusted_entry(record, self._keys) for record in records])
        journeys, segments = False, set()
        for record, read in zip(records, reads, strict=True):
            self._next_offset = record.offset + 1
            if fold_record(self.catalog, record, read, self.topic, self.metrics, self.segments):
                if isinstance(read, SegmentEntry):
                    segments.add(read.segment_id)
                else:
                    journeys = True
        return journeys, segments


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def read_catalog(client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
                 timeout_seconds: float = 20.0) -> tuple[Catalog, int]:
    """The journey catalog (skipped records noted on it) and the offset after its last record; blocking."""
    catalog, _, end = read_log(client_config, topic, keys=keys, timeout_seconds=timeout_seconds)
    return catalog, end


def read_log(client_config: Mapping[str, str], topic: str, *, keys: SigningKeys | None,
             timeout_seconds: float = 20.0) -> tuple[Catalog, SegmentCatalog, int]:
    """The journeys and the segments of the topic (skipped records noted on them) and the offset after
    its last record; blocking (commands)."""
    _check_topic(client_config, topic, timeout_seconds)
    collected: list[SourceRecord] = []

    async def collect(records: list[SourceRecord]) -> None:
        collected.extend(records)

    async def read() -> int:
        loop = KafkaLoop(FixedAssignment({(topic, 0): 0}, _READER_CONFIG), _Fold(collect),
                         LoopOptions(name="catalog-read", stop_at_end=True, idle_timeout_seconds=timeout_seconds),
                         client_config=client_config)
        await _read_to_end(loop, topic, client_config, timeout_seconds)
        return loop.position((topic, 0)) or 0

    end = run_blocking(read)
    catalog, segments = Catalog(), SegmentCatalog()
    next_offset = 0
    for record in collected:
        next_offset = record.offset + 1
        # A command reads past skipped records as the follower does.
        fold_record(catalog, record, trusted_entry(record, keys), topic, segments=segments)
    return catalog, segments, max(next_offset, end)


async def _read_to_end(loop: KafkaLoop[SourceRecord], topic: str, client_config: Mapping[str, str],
                       timeout_seconds: float) -> None:
    """Runs a bounded catalog read; every way it can fail is a `CatalogUnavailableError`."""
    try:
        async with asyncio.timeout(timeout_seconds):
            await loop.run(asyncio.Event())
    except TimeoutError as exc:
        raise CatalogUnavailableError(topic, _address(client_config),
                                      f"not read to its end within {timeout_seconds:.0f}s") from exc
    except KafkaReadError as exc:
        raise CatalogUnavailableError(topic, _address(client_config), exc.problem) from exc


_E = TypeVar("_E", CatalogEntry, SegmentEntry)


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

    def read_segments(self) -> SegmentCatalog:
        return read_log(self._config, self.topic, keys=self._keys, timeout_seconds=self._timeout)[1]

    def write(self, make: Callable[[Catalog], CatalogEntry | None], *, attempts: int = 5) -> CatalogEntry | None:
        """Writes ``make(catalog)`` on the catalog as of the log's end; None when ``make`` says nothing changes.

        Raises:
            CatalogWriteError: the broker refused the record, or ``attempts`` writes each lost a race.
            CatalogError: ``make`` refused the change.
        """
        def accepted(catalog: Catalog, _: SegmentCatalog, entry: CatalogEntry) -> bool:
            history = catalog.history(entry.journey_id)
            return len(history) >= entry.revision and history[entry.revision - 1].entry_id == entry.entry_id

        return self._write(lambda catalog, _: make(catalog), accepted, attempts)

    def write_segment(self, make: Callable[[SegmentCatalog], SegmentEntry | None], *,
                      attempts: int = 5) -> SegmentEntry | None:
        """`write` for a segment entry: ``make(segments)`` on the segments as of the log's end."""
        def accepted(_: Catalog, segments: SegmentCatalog, entry: SegmentEntry) -> bool:
            history = segments.history(entry.segment_id)
            return len(history) >= entry.revision and history[entry.revision - 1].entry_id == entry.entry_id

        return self._write(lambda _, segments: make(segments), accepted, attempts)

    def _write(self, make: Callable[[Catalog, SegmentCatalog], _E | None],
               accepted: Callable[[Catalog, SegmentCatalog, _E], bool], attempts: int) -> _E | None:
        producer = Producer({**self._config, "acks": "all", "enable.idempotence": True, "log_level": 0})
        for _ in range(attempts):
            catalog, segments, _end = read_log(self._config, self.topic, keys=self._keys,
                                               timeout_seconds=self._timeout)
            entry = make(catalog, segments)
            if entry is None:
                return None
            key, value = _readable(entry)
            offset = self._produce(producer, key, value)
            catalog, segments, end = read_log(self._config, self.topic, keys=self._keys,
                                              timeout_seconds=self._timeout)
            if end <= offset:
                raise CatalogWriteError(f"entry written at offset {offset} but the log ends at {end}")
            # Accepted iff the log's own fold took this very write as the revision.
            if accepted(catalog, segments, entry):
                return entry
            log.warning("catalog_write_lost_race", key=key.decode("utf-8", "replace"))
        raise CatalogWriteError(f"{attempts} attempts to write to {self.topic!r} each lost to a concurrent writer")

    def _produce(self, producer: Producer, key: bytes, value: bytes) -> int:
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


def _readable(entry: CatalogEntry | SegmentEntry) -> tuple[bytes, bytes]:
    """The entry's record, refused if readers would skip it (a copy of content an older release accepted, say)."""
    match entry:
        case CatalogEntry():
            key, value = encode_entry(entry)
            decode: Callable[[bytes, bytes], object] = decode_entry
            name = entry.journey_id
        case SegmentEntry():
            key, value = encode_segment_entry(entry)
            decode, name = decode_segment_entry, f"segment {entry.segment_id}"
    try:
        decode(key, value)
    except CatalogEntryError as exc:
        raise CatalogWriteError(f"refusing to write {name} rev {entry.revision}: readers would skip "
                                f"it ({exc.reason.value}: {exc.problem})") from exc
    return key, value


__all__ = ["CatalogFollower", "CatalogMetrics", "CatalogUnavailableError", "CatalogWriteError", "CatalogWriter",
           "Read", "TOPIC_CONFIG", "fold_record", "read_catalog", "read_log", "trusted_entry"]
