"""``eventflow dlq inspect`` and ``eventflow dlq replay``."""

from __future__ import annotations

import argparse

from eventflow.commands.dlq_tools import DeadLetter, read_dead_letters, replay
from eventflow.settings import load_settings


def _select(records: list[DeadLetter], args: argparse.Namespace) -> list[DeadLetter]:
    chosen = records
    if args.error_type:
        chosen = [r for r in chosen if r.error_type == args.error_type]
    if args.positions:
        wanted = {p.strip() for p in args.positions.split(",") if p.strip()}
        chosen = [r for r in chosen if r.position in wanted]
    return chosen


def _inspect(args: argparse.Namespace) -> int:
    settings = load_settings()
    records = _select(list(read_dead_letters(settings.kafka.client_config(), settings.kafka.dlq_topic)), args)
    for record in records[-args.limit:]:
        print(record.describe())
    print(f"{len(records)} dead letters in {settings.kafka.dlq_topic}"
          + (f" (showing the last {args.limit})" if len(records) > args.limit else ""))
    return 0


def _replay(args: argparse.Namespace) -> int:
    if not (args.all or args.positions or args.error_type):
        print("eventflow: choose records with --positions P:O,..., --error-type TYPE, or --all")
        return 2
    settings = load_settings()
    records = _select(list(read_dead_letters(settings.kafka.client_config(), settings.kafka.dlq_topic)), args)
    count = replay(settings.kafka.client_config(), records,
                   on_replayed=lambda r: print(f"replayed {r.position} -> {r.source_topic}"))
    print(f"replayed {count} records")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dlq inspect`` and ``dlq replay``."""
    dlq = commands.add_parser("dlq", help="inspect or replay the dead-letter topic")
    actions = dlq.add_subparsers(dest="dlq_action", title="commands", metavar="COMMAND")
    for name, handler, text in (("inspect", _inspect, "show dead letters readably"),
                                ("replay", _replay, "re-publish chosen dead letters to their source topic")):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("--positions", help="comma-separated partition:offset of dead-letter records")
        parser.add_argument("--error-type", help="only records dead-lettered with this error type")
        if name == "inspect":
            parser.add_argument("--limit", type=int, default=20, help="show at most this many (newest)")
        else:
            parser.add_argument("--all", action="store_true", help="replay every dead letter")
        parser.set_defaults(handler=handler)
