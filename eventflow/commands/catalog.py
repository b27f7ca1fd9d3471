"""``eventflow journeys publish|list|history|diff|pause|resume|archive|rollback``: the live catalog.

Every command reads the catalog topic (``EVENTFLOW_CATALOG_TOPIC`` on ``KAFKA_BOOTSTRAP_SERVERS``);
changes are written as new entries (docs/architecture.md, "Journey catalog on a compacted Kafka topic"),
signed with ``EVENTFLOW_CATALOG_SIGNING_KEYS`` ("Catalog trust: signed, validated entries"). Records
the processes skip (unsigned, invalid, from a newer release) are skipped here too, and named.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from journeys.catalog import Catalog, CatalogAction, CatalogEntry

if TYPE_CHECKING:
    from consumer.catalog_admin import CatalogValidationError
    from consumer.catalog_topic import CatalogWriter


def catalog_writer() -> CatalogWriter:
    """A writer on the configured catalog topic with the configured signing keys (journeys and segments)."""
    from consumer.catalog_topic import CatalogWriter
    from eventflow.settings import load_tools

    tools = load_tools()
    return CatalogWriter(tools.core.kafka.client_config(), tools.catalog.topic, keys=tools.catalog.trust())


def _warn_rejected(catalog: Catalog, journey_id: str) -> None:
    """Says on stderr when the journey's newest record was skipped: what serves is the last accepted entry."""
    rejection = catalog.rejection(journey_id)
    latest = catalog.latest(journey_id)
    if rejection is None:
        return
    serving = f"v{latest.version} ({latest.state.value}) is what serves" if latest else "nothing of it serves"
    print(f"eventflow: the newest record of {journey_id} was rejected ({rejection.describe()}); {serving}, "
          "and only that is changed or copied", file=sys.stderr)


def publishing_author(args: argparse.Namespace) -> str:
    """``--author``, else ``EVENTFLOW_CATALOG_AUTHOR``, else ``unknown``."""
    from core.settings import CatalogSettings

    return str(args.author or CatalogSettings.load().author or "unknown")


def refused(exc: CatalogValidationError) -> int:
    """Prints why nothing was published (each problem at ``file:line``); the command's exit code."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"nothing published: {len(exc.problems)} problem(s)", file=sys.stderr)
    return 1


def _describe(entry: CatalogEntry) -> str:
    return (f"rev {entry.revision:<4} v{entry.version:<4} {entry.action.value:<8} {entry.state.value:<8} "
            f"{entry.published_at:%Y-%m-%d %H:%M:%SZ}  {entry.author:<12} {entry.content_hash}  {entry.summary}")


def _publish(args: argparse.Namespace) -> int:
    from consumer.catalog_admin import CatalogValidationError, publish_path
    from eventflow.settings import load_tools
    writer = catalog_writer()
    try:
        # Fail closed: a journey on a channel no provider serves is not published (outside development mode).
        results = publish_path(writer, Path(args.path), author=publishing_author(args), summary=args.message,
                               channels=load_tools().channels)
    except CatalogValidationError as exc:
        return refused(exc)
    for result in results:
        if result.entry is None:
            print(f"unchanged {result.journey_id} v{result.current_version}")
        else:
            print(f"published {result.journey_id} v{result.entry.version} hash {result.entry.content_hash}")
    return 0


def _list(_: argparse.Namespace) -> int:
    writer = catalog_writer()
    catalog = writer.read()
    if not catalog.journey_ids:
        print(f"the catalog {writer.topic!r} is empty")
    for journey_id in catalog.journey_ids:
        latest = catalog.latest(journey_id)
        assert latest is not None
        rejected = catalog.rejection(journey_id)
        print(f"{journey_id:<24} v{latest.version:<4} {latest.state.value:<8} {latest.content_hash}  "
              f"{latest.published_at:%Y-%m-%d %H:%M:%SZ} by {latest.author}"
              + (f"  (newest record rejected: {rejected.reason.value})" if rejected else ""))
    for journey_id, rejection in catalog.rejections().items():
        if catalog.latest(journey_id) is None:
            print(f"{journey_id:<24} (no accepted entry; newest record rejected: {rejection.describe()})")
    return 0


def _history(args: argparse.Namespace) -> int:
    writer = catalog_writer()
    catalog = writer.read()
    entries = catalog.history(args.journey)
    _warn_rejected(catalog, args.journey)
    if not entries:
        print(f"eventflow: journey {args.journey!r} is not in the catalog", file=sys.stderr)
        return 1
    for entry in entries:
        print(_describe(entry))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from consumer.catalog_admin import diff
    writer = catalog_writer()
    text = diff(writer.read(), args.journey, args.old, args.new)
    print(text or f"v{args.old} and v{args.new} of {args.journey} have the same sources", end="" if text else "\n")
    return 0


def _change(action: CatalogAction, args: argparse.Namespace) -> int:
    from consumer.catalog_admin import cancel_running, change
    writer = catalog_writer()
    _warn_rejected(writer.read(), args.journey)
    entry = change(writer, args.journey, action, author=publishing_author(args), summary=args.message,
                   rollback_to=getattr(args, "version", None))
    if entry is None:
        print(f"{args.journey}: nothing to change")
    else:
        print(f"{args.journey}: v{entry.version} {entry.state.value} ({entry.action.value}, rev {entry.revision})")
    if action is CatalogAction.ARCHIVE and args.exit_running:
        from core.temporal_client import connect
        from eventflow.settings import load_settings

        async def cancel() -> int:
            return await cancel_running(await connect(load_settings().temporal), args.journey)

        print(f"{args.journey}: cancellation requested for {asyncio.run(cancel())} running instance(s)")
    return 0


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the catalog subcommands under ``eventflow journeys``."""
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--author", help="who makes the change (default: $USER)")
        parser.add_argument("-m", "--message", help="change summary for the history")

    publish = actions.add_parser("publish", help="validate, then publish definitions as new catalog versions")
    publish.add_argument("path", help="a definition file (in <dir>/definitions/) or a folder with definitions/ "
                                      "and templates/")
    common(publish)
    publish.set_defaults(handler=_publish)

    actions.add_parser("list", help="every journey in the catalog: version, state, hash").set_defaults(handler=_list)

    history = actions.add_parser("history", help="a journey's changes: who, when, version, hash, summary")
    history.add_argument("journey")
    history.set_defaults(handler=_history)

    diff = actions.add_parser("diff", help="the sources of two versions, as a unified diff")
    diff.add_argument("journey")
    diff.add_argument("old", type=int)
    diff.add_argument("new", type=int)
    diff.set_defaults(handler=_diff)

    for action, text in ((CatalogAction.PAUSE, "no new entries; running instances continue"),
                         (CatalogAction.RESUME, "take new entries again"),
                         (CatalogAction.ARCHIVE, "no new entries; running instances continue unless --exit-running")):
        parser = actions.add_parser(action.value, help=text)
        parser.add_argument("journey")
        common(parser)
        if action is CatalogAction.ARCHIVE:
            parser.add_argument("--exit-running", action="store_true",
                                help="also cancel the journey's running instances (needs Temporal)")
        parser.set_defaults(handler=lambda args, action=action: _change(action, args))

    rollback = actions.add_parser("rollback", help="publish an old version's content as a new version")
    rollback.add_argument("journey")
    rollback.add_argument("version", type=int)
    common(rollback)
    rollback.set_defaults(handler=lambda args: _change(CatalogAction.ROLLBACK, args))
