"""``eventflow segments list|show|preview|refresh|publish|history``: the segments beside the journeys.

``list`` and ``show`` read the definitions (``<journeys dir>/audiences``, or with the catalog source
``kafka`` the catalog topic's latest versions); ``preview`` evaluates a
segment over every customer in the store without changing its membership, printing the member
count, the share of all customers and a sample of ids, and says so plainly when the segment
matches everyone (a broadcast to it then needs ``--confirm``). ``refresh`` re-evaluates every
customer (conditions that change with the clock alone); the consumer also does it on a schedule.
``publish`` validates the segment files and writes each changed one to the catalog topic as a new
version (signed as ``eventflow journeys publish`` signs), which consumers with the catalog source
``kafka`` follow live; ``history`` lists a segment's published versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from consumer.catalog_admin import CatalogValidationError, publish_segments
from core.errors import ConfigError
from core.settings import CatalogSettings, DatabaseSettings
from eventflow.commands.catalog import catalog_writer, publishing_author, refused
from eventflow.settings import load_tools
from journeys.loader import default_journeys_dir
from journeys.segment_catalog import SegmentEntry
from journeys.segments import Segment, UnknownSegmentError, load_segments
from journeys.topics import read_topics
from store import open_store
from store.segments import Preview, SegmentStore


def defined_segments(directory: str | None) -> list[Segment]:
    """The segments consumers evaluate: with ``EVENTFLOW_CATALOG_SOURCE=kafka`` the catalog topic's
    latest versions (unless ``directory`` names files), else the files under ``directory``."""
    if directory is None and CatalogSettings.load().source == "kafka":
        return list(catalog_writer().read_segments().segments())
    return load_segments(Path(directory) if directory else None)


def _segments(args: argparse.Namespace) -> list[Segment]:
    return defined_segments(args.dir)


def _one(args: argparse.Namespace) -> Segment:
    found = {segment.id: segment for segment in _segments(args)}
    if args.segment not in found:
        raise UnknownSegmentError(args.segment, sorted(found))
    return found[args.segment]


def _list(args: argparse.Namespace) -> int:
    for segment in _segments(args):
        reads = ", ".join(sorted(segment.event_types())) or "profile and consent only"
        print(f"{segment.id} v{segment.version}  {segment.description}  (reads: {reads})")
    return 0


def _show(args: argparse.Namespace) -> int:
    segment = _one(args)
    print(f"{segment.id} v{segment.version} ({segment.file})")
    if segment.description:
        print(segment.description)
    print(segment.match)
    return 0


async def _with_store(action: str, segments: list[Segment], segment: Segment | None,
                      directory: str | None) -> Preview | int:
    database = load_tools().database
    # The topics file the workers send by: a consent condition applies its defaults.
    topics = read_topics(Path(directory) if directory else default_journeys_dir())
    pool = await open_store(database)
    if pool is None:
        raise ConfigError(DatabaseSettings.variable("url"), f"is not set: {action} needs the customer store")
    try:
        store = SegmentStore(pool, segments, topics=topics)
        if segment is not None:
            return await store.preview(segment)
        return len(await store.refresh_all())
    finally:
        await pool.close()


def _preview(args: argparse.Namespace) -> int:
    segment = _one(args)
    preview = asyncio.run(_with_store("preview", [segment], segment, args.dir))
    assert isinstance(preview, Preview)
    if args.json:
        print(json.dumps({"segment": preview.segment_id, "members": preview.members, "customers": preview.customers,
                          "matches_everyone": preview.matches_everyone, "sample": list(preview.sample)}))
        return 0
    share = f"{100 * preview.members / preview.customers:.1f} %" if preview.customers else "no customers yet"
    print(f"{preview.segment_id}: {preview.members} of {preview.customers} customers ({share})")
    if preview.matches_everyone:
        print("this segment matches EVERY customer: a broadcast to it needs --confirm", file=sys.stderr)
    for customer_id in preview.sample:
        print(f"  {customer_id}")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    changes = asyncio.run(_with_store("refresh", _segments(args), None, args.dir))
    print(f"{changes} membership change(s) recorded")
    return 0


def _publish(args: argparse.Namespace) -> int:
    try:
        results = publish_segments(catalog_writer(), Path(args.path) if args.path else default_journeys_dir(),
                                   author=publishing_author(args), summary=args.message)
    except CatalogValidationError as exc:
        return refused(exc)
    for result in results:
        if result.entry is None:
            print(f"unchanged {result.segment_id} v{result.current_version}")
        else:
            print(f"published {result.segment_id} v{result.entry.version} hash {result.entry.content_hash}")
    return 0


def _describe(entry: SegmentEntry) -> str:
    return (f"rev {entry.revision:<4} v{entry.version:<4} {entry.action.value:<8} "
            f"{entry.published_at:%Y-%m-%d %H:%M:%SZ}  {entry.author:<12} {entry.content_hash}  {entry.summary}")


def _history(args: argparse.Namespace) -> int:
    segments = catalog_writer().read_segments()
    entries = segments.history(args.segment)
    rejection = segments.rejection(args.segment)
    if rejection is not None:
        serving = f"v{entries[-1].version} is what applies" if entries else "no version of it applies"
        print(f"eventflow: the newest record of segment {args.segment} was rejected ({rejection.describe()}); "
              f"{serving}", file=sys.stderr)
    if not entries:
        print(f"eventflow: segment {args.segment!r} is not in the catalog", file=sys.stderr)
        return 1
    for entry in entries:
        print(_describe(entry))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    segments = commands.add_parser("segments", help="segments beside the journeys: list, show, preview, refresh; "
                                                    "publish to the catalog topic, history")
    actions = segments.add_subparsers(dest="segments_command", metavar="ACTION")
    for name, handler, text in (("list", _list, "every segment with its version and the events it reads"),
                                ("show", _show, "one segment's condition"),
                                ("preview", _preview, "member count, share and a sample of ids (changes nothing)"),
                                ("refresh", _refresh, "re-evaluate every customer (clock-driven conditions)")):
        action = actions.add_parser(name, help=text)
        if name in {"show", "preview"}:
            action.add_argument("segment", help="the segment's id")
        if name == "preview":
            action.add_argument("--json", action="store_true", help="print one JSON object")
        action.add_argument("--dir", help="the journeys folder (default: the catalog topic with "
                                          "EVENTFLOW_CATALOG_SOURCE=kafka, else $EVENTFLOW_JOURNEYS_DIR)")
        action.set_defaults(handler=handler)
    publish = actions.add_parser("publish", help="validate, then publish segments as new catalog versions "
                                                 "(docs/deploy.md 4a)")
    publish.add_argument("path", nargs="?", help="the journeys folder, its audiences/ or one segment file "
                                                 "(default: $EVENTFLOW_JOURNEYS_DIR)")
    publish.add_argument("--author", help="who makes the change (default: $USER)")
    publish.add_argument("-m", "--message", help="change summary for the history")
    publish.set_defaults(handler=_publish)
    history = actions.add_parser("history", help="a segment's published versions: who, when, hash, summary")
    history.add_argument("segment", help="the segment's id")
    history.set_defaults(handler=_history)
