"""``eventflow schemas check`` and ``eventflow schemas register``.

``check`` compares every schema in ``avro/`` with its previous version — the one committed at a
git revision (default ``HEAD``), or the latest one in the Schema Registry when a registry is
configured — under a compatibility level (default backward: the new schema reads old data), and
prints each broken rule plus a diff when they are not compatible; it also checks that the
envelope still reads every earlier version kept in ``avro/history/``. ``freeze`` keeps the
current envelope there. ``register`` registers the envelope under the configured subject naming
strategy.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

from fastavro import parse_schema
from fastavro.schema import load_schema

from core.errors import ConfigError, EventflowError
from eventflow.settings import load_settings
from events.compat import Incompatibility, Level, check, check_level
from events.event_file import EventFileError, FileEvent
from events.registry import (
    SUBJECT_STRATEGIES,
    SchemaRegistryClient,
    SchemaRegistryError,
    SubjectStrategy,
    call_registry,
    connect,
    envelope_schema,
    registry_settings,
    subject_name,
)
from events.schemas import ENVELOPE, HISTORY_DIR, default_avro_dir, history_name, read_history
from events.schemas import read as load

LEVELS: tuple[Level, ...] = ("backward", "forward", "full")


class SchemaHistoryError(EventflowError):
    """The previous versions of the schemas could not be read from git."""


@dataclass(frozen=True)
class FileResult:
    """The verdict for one schema file (or registry subject).

    Attributes:
        name: file name or subject.
        status: ``compatible``, ``incompatible``, ``new`` or ``removed``.
        problems: the broken rules when incompatible.
        diff: unified diff from the previous version to the current one.
    """

    name: str
    status: str
    problems: tuple[Incompatibility, ...] = ()
    diff: str = ""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds this package's subcommands to the ``eventflow`` parser."""
    schemas = commands.add_parser("schemas", help="check schema compatibility, register schemas")
    actions = schemas.add_subparsers(dest="schemas_action", title="commands", metavar="COMMAND")

    check = actions.add_parser("check", help="is each schema in avro/ compatible with its previous version?")
    check.add_argument("--source", choices=["auto", "git", "registry"], default="auto",
                       help="previous versions from git or the registry; auto: registry when configured")
    check.add_argument("--against", default="HEAD", help="git revision holding the previous versions (default HEAD)")
    check.add_argument("--level", choices=LEVELS, default="backward",
                       help="backward: new reads old (default); forward: old reads new; full: both")
    check.add_argument("--avro-dir", type=Path, help="schema folder (default EVENTFLOW_AVRO_DIR or avro/)")
    check.add_argument("--topic", action="append", help="topic whose subject to check (registry; default EVENTFLOW_TOPICS)")
    check.set_defaults(handler=_check)

    freeze = actions.add_parser("freeze", help="keep the current envelope in avro/history/ so producers on it "
                                "keep decoding after it changes (embedded mode)")
    freeze.add_argument("--avro-dir", type=Path, help="schema folder (default EVENTFLOW_AVRO_DIR or avro/)")
    freeze.set_defaults(handler=_freeze)

    reg = actions.add_parser("register", help="register the envelope schema in the Schema Registry")
    reg.add_argument("--topic", action="append", help="topic to register for (default EVENTFLOW_TOPICS)")
    reg.add_argument("--strategy", choices=SUBJECT_STRATEGIES,
                     help="subject naming strategy (default EVENTFLOW_SUBJECT_NAME_STRATEGY)")
    reg.add_argument("--avro-dir", type=Path, help="schema folder (default EVENTFLOW_AVRO_DIR or avro/)")
    reg.set_defaults(handler=_register)


def _topics(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.topic) if args.topic else load_settings().kafka.topics


def _client() -> tuple[SchemaRegistryClient, SubjectStrategy]:
    settings = registry_settings()
    if settings is None:
        raise ConfigError("EVENTFLOW_SCHEMA_REGISTRY_URL", "is required for this command")
    return connect(settings), settings.subject_strategy


def _register(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    client, strategy = _client()
    strategy = args.strategy or strategy
    schema = envelope_schema(load(args.avro_dir or default_avro_dir()).expanded_json())
    subjects = dict.fromkeys(subject_name(strategy, topic, ENVELOPE) for topic in _topics(args))
    failed = 0
    for subject in subjects:
        try:
            schema_id = call_registry(f"register under {subject}", partial(client.register_schema, subject, schema))
        except SchemaRegistryError as exc:
            print(f"✗ {subject}: HTTP {exc.http_status_code}: {exc.error_message}", file=out)
            failed += 1
            continue
        print(f"✓ {subject}: schema id {schema_id}", file=out)
    return 1 if failed else 0


def _check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    avro_dir = (args.avro_dir or default_avro_dir()).resolve()
    source = args.source
    if source == "auto":
        source = "registry" if registry_settings() is not None else "git"
    if source == "registry":
        results = check_against_registry(avro_dir, _topics(args), args.level)
        against = "the registry"
    else:
        results = check_against_git(avro_dir, args.against, args.level)
        against = args.against
    results += check_history(avro_dir)
    return report(results, against, args.level, out)


def _freeze(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    avro_dir = (args.avro_dir or default_avro_dir()).resolve()
    schemas = load(avro_dir)
    path = avro_dir / HISTORY_DIR / history_name(schemas.fingerprint)
    if path.exists():
        print(f"{path.relative_to(avro_dir)} already kept", file=out)
        return 0
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(json.loads(schemas.expanded_json()), indent=2) + "\n")
    print(f"kept {path.relative_to(avro_dir)}; commit it with the schema change", file=out)
    return 0


def check_history(avro_dir: Path) -> list[FileResult]:
    """Can the current envelope read every earlier version kept in ``avro/history/``?

    Embedded-mode producers may still write those versions; the decoder resolves them against the
    current envelope, so they must stay backward compatible whatever level is checked.
    """
    current = load(avro_dir).envelope
    results = []
    for path, writer in read_history(avro_dir).values():
        problems = tuple(check(current, writer))
        results.append(FileResult(f"{HISTORY_DIR}/{path.name}", "incompatible" if problems else "compatible",
                                  problems))
    return results


def report(results: Sequence[FileResult], against: str, level: str, out: TextIO) -> int:
    """Prints one line per schema, then the problems and diffs; 1 if any is incompatible."""
    bad = [r for r in results if r.status == "incompatible"]
    for result in results:
        mark = "✗" if result.status == "incompatible" else "✓"
        print(f"{mark} {result.name}: {result.status}", file=out)
    for result in bad:
        print(f"\n{result.name} is not {level} compatible with {against}:", file=out)
        for problem in result.problems:
            print(f"  - {problem}", file=out)
        if result.diff:
            print(result.diff, file=out)
    print(f"\n{len(results) - len(bad)} of {len(results)} schemas {level} compatible with {against}", file=out)
    return 1 if bad else 0


def _git(avro_dir: Path, *argv: str) -> str:
    result = subprocess.run(["git", "-C", str(avro_dir), *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SchemaHistoryError(f"git {' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def check_against_git(avro_dir: Path, revision: str, level: Level) -> list[FileResult]:
    """Compares every ``*.avsc`` in ``avro_dir`` with the version committed at ``revision``."""
    prefix = _git(avro_dir, "rev-parse", "--show-prefix").strip()
    listed = _git(avro_dir, "ls-tree", "--full-tree", "--name-only", f"{revision}:{prefix}" if prefix else revision).split()
    previous_names = sorted(n for n in listed if n.endswith(".avsc"))
    current_names = sorted(p.name for p in avro_dir.glob("*.avsc"))
    results: list[FileResult] = []
    with tempfile.TemporaryDirectory(prefix="eventflow-schemas-") as scratch:
        old_dir = Path(scratch)
        for name in previous_names:
            (old_dir / name).write_text(_git(avro_dir, "show", f"{revision}:./{name}"))
        for name in current_names:
            if name not in previous_names:
                results.append(FileResult(name, "new"))
                continue
            new_text, old_text = (avro_dir / name).read_text(), (old_dir / name).read_text()
            new, old = load_schema(str(avro_dir / name)), load_schema(str(old_dir / name))
            problems = tuple(check_level(new, old, level))
            results.append(FileResult(name, "incompatible" if problems else "compatible", problems,
                                      _diff(old_text, new_text, f"{revision}:{name}", name) if problems else ""))
        results += [FileResult(n, "removed") for n in previous_names if n not in current_names]
    return results


def check_against_registry(avro_dir: Path, topics: Sequence[str], level: Level) -> list[FileResult]:
    """Compares the envelope with the latest version under each topic's subject in the registry."""
    client, strategy = _client()
    schemas = load(avro_dir)
    new_text = json.dumps(json.loads(schemas.expanded_json()), indent=2)
    results: list[FileResult] = []
    for subject in dict.fromkeys(subject_name(strategy, t, ENVELOPE) for t in topics):
        try:
            latest = call_registry(f"get the latest version of {subject}", partial(client.get_latest_version, subject))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                results.append(FileResult(subject, "new"))
                continue
            raise
        old_text = json.dumps(json.loads(latest.schema.schema_str or "{}"), indent=2)
        old = parse_schema(json.loads(old_text), named_schemas={})
        problems = list(check_level(schemas.envelope, old, level))
        server_says = call_registry(f"test compatibility under {subject}", partial(
            client.test_compatibility, subject, envelope_schema(schemas.expanded_json())))
        if not server_says and not problems:
            problems.append(Incompatibility(subject, "type_mismatch",
                                            "the registry reports the schema incompatible under its own level"))
        version = f"{subject} v{latest.version}"
        results.append(FileResult(subject, "incompatible" if problems else "compatible", tuple(problems),
                                  _diff(old_text, new_text, version, "avro/") if problems else ""))
    return results


def _diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_name, tofile=new_name, n=2))


def produce_cloudevents(client_config: dict[str, str], topic: str, events: Sequence[FileEvent], mode: str,
                        data_schema: Path | None = None) -> int:
    """Publishes CloudEvents (JSON form) to ``topic`` in binary or structured mode; returns how many.

    Every event is converted before the first is sent, so a file with a mistake publishes nothing.
    With ``data_schema`` (an ``.avsc`` file), binary-mode data is Avro registered under the topic's
    subject in the configured registry (confluent-kafka's ``AvroSerializer``).

    Raises:
        EventFileError: some events are not CloudEvents (each named ``file:line``); nothing was sent.
    """
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from events.ce_producer import CloudEventInputError, KafkaCloudEvent, to_kafka
    from events.cloudevents import Mode

    serialize = None
    if data_schema is not None:
        registry = registry_settings()
        if registry is None:
            raise ConfigError("EVENTFLOW_SCHEMA_REGISTRY_URL", "--data-schema needs a schema registry")
        serializer = AvroSerializer(connect(registry), data_schema.read_text(), conf={"auto.register.schemas": True})
        context = SerializationContext(topic, MessageField.VALUE)
        serialize = lambda data: bytes(serializer(dict(data), context) or b"")  # noqa: E731 - bound once here
    records: list[KafkaCloudEvent] = []
    problems: list[str] = []
    for event in events:
        try:
            records.append(to_kafka(event.event, Mode(mode), serialize))
        except CloudEventInputError as exc:
            problems.append(f"{event.where}: {exc}")
    if problems:
        raise EventFileError(events[0].path, problems)
    producer = Producer(dict(client_config))
    for record in records:
        producer.produce(topic, key=record.key, value=record.value, headers=record.headers)
    remaining = producer.flush(30)
    if remaining:
        raise EventflowError(f"{len(records) - remaining} of {len(records)} CloudEvents published to {topic}; "
                             f"{remaining} still queued after 30s")
    return len(records)
