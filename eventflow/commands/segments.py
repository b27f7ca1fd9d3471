"""``eventflow segments list|show|preview``: the segments defined beside the journeys, and who is in them.

``list`` and ``show`` read the definitions (``<journeys dir>/audiences``); ``preview`` evaluates a
segment over every customer in the store without changing its membership, printing the member
count, the share of all customers and a sample of ids, and says so plainly when the segment
matches everyone (a broadcast to it then needs ``--confirm``). ``refresh`` re-evaluates every
customer (conditions that change with the clock alone); the consumer also does it on a schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from core.errors import ConfigError
from core.settings import DatabaseSettings
from eventflow.settings import load_tools
from journeys.segments import Segment, UnknownSegmentError, load_segments
from store import open_store
from store.segments import Preview, SegmentStore


def _segments(args: argparse.Namespace) -> list[Segment]:
    return load_segments(Path(args.dir) if args.dir else None)


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


async def _with_store(action: str, segments: list[Segment], segment: Segment | None) -> Preview | int:
    database = load_tools().database
    pool = await open_store(database)
    if pool is None:
        raise ConfigError(DatabaseSettings.variable("url"), f"is not set: {action} needs the customer store")
    try:
        store = SegmentStore(pool, segments)
        if segment is not None:
            return await store.preview(segment)
        return len(await store.refresh_all())
    finally:
        await pool.close()


def _preview(args: argparse.Namespace) -> int:
    segment = _one(args)
    preview = asyncio.run(_with_store("preview", [segment], segment))
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
    changes = asyncio.run(_with_store("refresh", _segments(args), None))
    print(f"{changes} membership change(s) recorded")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    segments = commands.add_parser("segments", help="segments beside the journeys: list, show, preview, refresh")
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
        action.add_argument("--dir", help="the journeys folder (default: $EVENTFLOW_JOURNEYS_DIR)")
        action.set_defaults(handler=handler)
