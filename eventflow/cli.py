"""The ``eventflow`` command line: every process and tool, one subcommand each (`build_parser`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from opentelemetry.trace import SpanKind

from core import logs, tracing
from core.errors import EventflowError
from core.settings import OpsSettings
from devstack import DevstackError, Stack
from eventflow.commands import broadcasts as broadcasts_cli
from eventflow.commands import customers as customers_cli
from eventflow.commands import db as db_cli
from eventflow.commands import dev_services as dev_services_cli
from eventflow.commands import dlq as consumer_cli
from eventflow.commands import journeys as journeys_cli
from eventflow.commands import schemas as events_cli
from eventflow.commands import segments as segments_cli
from eventflow.settings import load_consumer, load_settings, load_worker, markdown_table
from events.event_file import EventFileError, read_event_file


def _worker(_: argparse.Namespace) -> int:
    from eventflow.worker import run_worker

    process = load_worker()
    logs.configure(process.ops.log_format)
    with tracing.started(tracing.load_tracing_settings(), "eventflow-worker"):
        asyncio.run(run_worker(process))
    return 0


def _consume(_: argparse.Namespace) -> int:
    from eventflow.consume import run_consumer

    process = load_consumer()  # every consumer setting is validated before anything starts
    logs.configure(process.core.log_format)
    with tracing.started(tracing.load_tracing_settings(), "eventflow-consumer"):
        asyncio.run(run_consumer(process.core, catalog=process.catalog, database=process.database,
                                 addresses=process.addresses, channels=process.channels))
    return 0


def _webhooks(_: argparse.Namespace) -> int:
    from eventflow.settings import load_webhooks
    from eventflow.webhooks.app import run_webhooks

    process = load_webhooks()  # keys and tokens are checked before anything listens
    logs.configure(process.ops.log_format)
    with tracing.started(tracing.load_tracing_settings(), "eventflow-webhooks"):
        asyncio.run(run_webhooks(process))
    return 0


def _temporal(args: argparse.Namespace) -> int:
    from core.temporal_client import connect
    from eventflow.commands.temporal_setup import register_search_attributes

    settings = load_settings()

    async def setup() -> str:
        client = await connect(settings.temporal)
        result = await register_search_attributes(client, settings.temporal.namespace)
        added = f"added {', '.join(result.added)}" if result.added else "nothing to add"
        present = f"; already registered: {', '.join(result.already_present)}" if result.already_present else ""
        return f"namespace {result.namespace}: search attributes {added}{present}"

    print(asyncio.run(setup()))
    return 0


def _codec_server(_: argparse.Namespace) -> int:
    from eventflow.codec_server import run_codec_server
    from eventflow.settings import load_codec_server

    process = load_codec_server()  # keys and bearer token validated before the port opens
    logs.configure(process.ops.log_format)
    asyncio.run(run_codec_server(process))
    return 0


def _preferences(_: argparse.Namespace) -> int:
    from eventflow.preferences import run_preferences
    from eventflow.settings import load_preferences

    process = load_preferences()  # link keys and the customer store checked before the port opens
    logs.configure(process.ops.log_format)
    asyncio.run(run_preferences(process))
    return 0


def _nothing_published(problems: Sequence[str], topic: str, why: str) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"nothing published to {topic}: {why}", file=sys.stderr)
    return 1


def _produce(args: argparse.Namespace) -> int:
    from events.config import build_producer
    from events.producer import DeliveryError, InvalidRecordError
    from events.samples import demo_events

    settings = load_settings()
    topic = args.topic or settings.kafka.topics[0]
    if args.cloudevents and not args.file:
        print("eventflow: --cloudevents needs --file (CloudEvents in JSON form, one a line)", file=sys.stderr)
        return 2
    try:
        # CloudEvents carry their own `id`: no Eventflow event_id is derived for them.
        read = read_event_file(Path(args.file), derive_ids=not args.cloudevents) if args.file else None
    except EventFileError as exc:
        if exc.whole_file:
            print(f"eventflow: {exc}; nothing published", file=sys.stderr)
            return 2
        return _nothing_published(exc.problems, topic, f"{len(exc.problems)} line(s) not JSON objects")
    if args.cloudevents:
        from eventflow.commands.schemas import produce_cloudevents

        assert read is not None
        try:
            count = produce_cloudevents(settings.kafka.client_config(), topic, read, args.cloudevents,
                                        Path(args.data_schema) if args.data_schema else None)
        except EventFileError as exc:
            return _nothing_published(exc.problems, topic, f"{len(exc.problems)} of {len(read)} CloudEvents invalid")
        print(f"published {count} CloudEvents ({args.cloudevents} mode) to {topic}")
        return 0
    producer = build_producer(settings.kafka.client_config(), topic)
    events = [(e.where, e.event) for e in read] if read is not None else [("sample", e) for e in demo_events()]
    # Every event is checked before the first is sent: a file with a mistake publishes nothing.
    problems: list[str] = []
    for where, event in events:
        try:
            producer.encode(event)
        except InvalidRecordError as exc:
            problems.append(f"{where}: event {event.get('event_id', '?')}: {exc.problem}")
    if problems:
        return _nothing_published(problems, topic, f"{len(problems)} of {len(events)} events invalid")
    with tracing.started(tracing.load_tracing_settings(), "eventflow-produce"):
        for _, event in events:
            # While tracing is on, each event starts a trace that the consumer continues.
            with tracing.span(f"{topic} publish", kind=SpanKind.PRODUCER, attributes={
                    "messaging.system": "kafka", "messaging.destination.name": topic,
                    tracing.EVENT_ID: str(event.get("event_id", "")),
                    tracing.EVENT_TYPE: str(event.get("event_type", ""))}):
                producer.send(event, headers=tracing.inject() or None)
        try:
            producer.flush()
        except DeliveryError as exc:
            print(f"eventflow: {exc}", file=sys.stderr)
            print(f"published {producer.delivered} of {len(events)} events to {topic}; the others were not "
                  "acknowledged by the broker", file=sys.stderr)
            return 1
    print(f"published {len(events)} events to {topic}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    stack = Stack()
    if args.action == "provision":
        from devstack.provision import provision_all
        from devstack.registry import apicurio_registry
        from devstack.tools import provision_tools

        artifacts = provision_all()
        print(f"kafka: {artifacts.kafka_libs}\ntemporal: {artifacts.temporal_cli}\ntest server: {artifacts.test_server}")
        print(f"postgres: {artifacts.postgres}")
        print(f"schema registry: {apicurio_registry()}")
        tools = provision_tools()
        print(f"helm: {tools.helm}\npromtool: {tools.promtool}")
        from devstack.mermaid import mermaid_cli

        try:
            print(f"mermaid cli: {mermaid_cli()}")
        except DevstackError as exc:  # optional: the diagram tests fall back to the subset checker
            print(f"mermaid cli: not provisioned ({exc})", file=sys.stderr)
        from devstack.browser import chromium

        try:
            print(f"chromium: {chromium()}")
        except DevstackError as exc:  # the browser tests skip without it (and fail in CI)
            print(f"chromium: not provisioned ({exc})", file=sys.stderr)
    elif args.action == "up":
        endpoints = stack.up()
        print(f"KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}")
        print(f"TEMPORAL_ADDRESS={endpoints.temporal_address}")
        if endpoints.database_url:
            from store import migrate

            # A fresh dev database gets the schema at once, so `eventflow worker` and `consume` start on it.
            revision = asyncio.run(migrate(endpoints.database_url))
            print(f"EVENTFLOW_DATABASE_URL={endpoints.database_url}  (schema {revision})")
        if endpoints.temporal_ui_url:
            print(f"Temporal UI: {endpoints.temporal_ui_url}")
    elif args.action == "down":
        stack.down()
        print("stopped")
    elif args.action == "status":
        status = stack.status()
        print(f"kafka: {'running' if status.kafka_running else 'stopped'} at {status.endpoints.kafka_bootstrap_servers}")
        print(f"temporal: {'running' if status.temporal_running else 'stopped'} at {status.endpoints.temporal_address}")
        print(f"postgres: {'running' if status.postgres_running else 'stopped'} at {status.endpoints.database_url}")
        for log_path in status.logs:
            print(f"log: {log_path}")
        return 0 if status.kafka_running and status.temporal_running and status.postgres_running else 3
    elif args.action == "run":
        from eventflow.demo import run_demo

        logs.configure_for_command("console")  # the demo prints what it did; library chatter stays quiet
        return run_demo()
    return 0


README_TABLE_START = "<!-- settings-table:start -->"
README_TABLE_END = "<!-- settings-table:end -->"


def settings_table() -> str:
    """The configuration table of every process, generated from the settings classes."""
    return markdown_table()


def _config(args: argparse.Namespace) -> int:
    table = settings_table()
    if not args.update_readme:
        print(table)
        return 0
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(README_TABLE_START)
    _, _, tail = rest.partition(README_TABLE_END)
    readme.write_text(f"{head}{README_TABLE_START}\n{table}\n{README_TABLE_END}{tail}")
    print(f"updated {readme}")
    return 0


#: What ``eventflow --help`` says above the list of commands (plain text: argparse prints it as is).
DESCRIPTION = ("Eventflow turns customer events on Kafka into customer journeys on Temporal. "
               "Run a command with --help for its options.")


def _print_help(parser: argparse.ArgumentParser) -> int:
    # A group run without a command (`eventflow journeys`) is asking what it offers: its help, not
    # argparse's "the following arguments are required".
    parser.print_help(sys.stderr)
    return 2


def _groups_print_help(parser: argparse.ArgumentParser) -> None:
    """Every parser with subcommands runs `_print_help` when none is given (recursively)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            # A subcommand's own ``handler`` default replaces this one when it is given.
            parser.set_defaults(handler=lambda _, parser=parser: _print_help(parser))
            for child in action.choices.values():
                _groups_print_help(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventflow", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser("worker", help="run a journey worker").set_defaults(handler=_worker)
    commands.add_parser("consume", help="run a consumer-group member").set_defaults(handler=_consume)
    commands.add_parser("webhooks", help="receive provider delivery reports and STOP/START (SendGrid, Twilio)"
                        ).set_defaults(handler=_webhooks)
    produce = commands.add_parser("produce", help="publish events (a JSON Lines file, or the samples)")
    produce.add_argument("--file", help="JSON Lines file of events; default: the built-in samples")
    produce.add_argument("--topic", help="topic; default: the first of EVENTFLOW_TOPICS")
    produce.add_argument("--cloudevents", choices=["binary", "structured"],
                         help="the file holds CloudEvents (JSON form); write them in this content mode")
    produce.add_argument("--data-schema", help="binary mode: Avro schema (.avsc) of the data, registered in the registry")
    produce.set_defaults(handler=_produce)
    dev = commands.add_parser("dev", help="local Kafka, Temporal and PostgreSQL: provision, up, down, status, run "
                                          "(the demo); a local push service and SMTP server")
    dev_actions = dev.add_subparsers(dest="dev_action", title="commands", metavar="COMMAND")
    for action, text in (("provision", "fetch and build the local servers (once; cached)"),
                         ("up", "start Kafka, Temporal and PostgreSQL (migrated); print their addresses"),
                         ("down", "stop them"), ("status", "whether each runs, and their logs"),
                         ("run", "the demo behind `make run`")):
        dev_actions.add_parser(action, help=text).set_defaults(handler=_dev, action=action)
    dev_services_cli.register(dev_actions)
    temporal = commands.add_parser("temporal", help="Temporal namespace set-up: setup (search attributes)")
    temporal.add_argument("action", choices=["setup"],
                          help="setup: register the search attributes journeys are started with (idempotent)")
    temporal.set_defaults(handler=_temporal)
    commands.add_parser("codec-server", help="serve the Temporal Web UI's and CLI's codec endpoint "
                        "(decrypts payloads for operators)").set_defaults(handler=_codec_server)
    commands.add_parser("preferences", help="serve the preference center: signed-link pages, one-click "
                        "unsubscribe and the JSON API (README.md, Preferences and unsubscribe)").set_defaults(handler=_preferences)
    config = commands.add_parser("config", help="print the configuration table (Markdown)")
    config.add_argument("--update-readme", action="store_true", help="rewrite the table in README.md")
    config.set_defaults(handler=_config)
    for register in (events_cli.register, journeys_cli.register, consumer_cli.register, customers_cli.register,
                     db_cli.register, segments_cli.register, broadcasts_cli.register):
        register(commands)
    _groups_print_help(parser)
    return parser


#: The long-running processes: they configure their own logging (JSON at info) once settings are read.
PROCESSES = frozenset({"worker", "consume", "webhooks", "codec-server", "preferences"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in PROCESSES:
            # A command prints what its user needs; logs keep the processes' format and say only warnings.
            logs.configure_for_command(OpsSettings.load().log_format)
        return int(args.handler(args))
    except (EventflowError, DevstackError) as exc:
        print(f"eventflow: {exc}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """Console-script entry point: `main`, then exit without interpreter teardown.

    The Temporal SDK's Rust runtime threads can still call into Python while CPython finalizes,
    which intermittently aborts the process *after* the command succeeded (temporalio/sdk-python
    issue 300). Nothing is left to clean up once `main` returned, so output is flushed and the
    process exits with the command's own code.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
