"""``eventflow broadcasts create|schedule|status|cancel``: one message to a segment's members.

``create`` snapshots the template's variants for the channel, records the broadcast in the customer
store and starts its ``Broadcast`` workflow, which waits for the time, fixes the audience (the
segment's members at that moment) and sends in paced batches. A segment that matches every
customer needs ``--confirm``. ``--topic`` names the subscription topic whose consent decides each
send (it must be declared in the journeys folder's topics.yaml for the channel). ``cancel`` returns once no batch is sending any more: nobody is sent
to after it. ``status`` shows planned, sent, skipped by reason and remaining, with a bar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime, time
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from core.errors import ConfigError, EventflowError
from core.settings import DatabaseSettings
from core.temporal_client import connect
from core.vocabulary import CHANNELS
from eventflow.commands.segments import defined_segments
from eventflow.settings import ToolSettings, load_tools
from journeys.loader import default_journeys_dir, load_templates
from journeys.segments import UnknownSegmentError
from journeys.topics import read_topics, send_topic_problems
from store import open_store
from store.broadcasts import (
    Broadcast,
    BroadcastMessage,
    BroadcastProgress,
    BroadcastState,
    BroadcastStore,
)
from store.segments import SegmentStore
from workflows.broadcast import BROADCAST_WORKFLOW, BroadcastInput, broadcast_workflow_id

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_BAR = 30


class BroadcastRefusedError(EventflowError):
    """A broadcast that must not start as asked (a segment matching everyone without --confirm, no template)."""


def _when(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _local(text: str | None) -> time | None:
    return time.fromisoformat(text) if text else None


async def _store(tools: ToolSettings) -> BroadcastStore:
    pool = await open_store(tools.database)
    if pool is None:
        raise ConfigError(DatabaseSettings.variable("url"), "is not set: broadcasts live in the customer store")
    return BroadcastStore(pool)


def _message(args: argparse.Namespace) -> BroadcastMessage:
    root = Path(args.dir) if args.dir else default_journeys_dir()
    templates, _ = load_templates(root / "templates")
    source = templates.get(args.template)
    if source is None:
        raise BroadcastRefusedError(f"template {args.template!r} is not defined in {root / 'templates'}")
    variants = source.template.variants.get(args.channel)
    if not variants:
        raise BroadcastRefusedError(f"template {args.template!r} has no {args.channel} variant")
    return BroadcastMessage(args.channel, source.template.id, source.template.default_locale,
                            {locale: dict(parts) for locale, parts in variants.items()}, args.priority,
                            _topic(root, args.topic, args.channel))


def _topic(root: Path, name: str | None, channel: str) -> str:
    """The broadcast's topic, checked as `journeys validate` checks a send step's (``""``: none)."""
    if not name:
        return ""
    problems = send_topic_problems(read_topics(root), name, [channel])
    if problems:
        raise BroadcastRefusedError("; ".join(problems))
    return name


async def _create(args: argparse.Namespace) -> int:
    if not _ID.match(args.broadcast):
        raise BroadcastRefusedError("a broadcast id is lower-case letters, digits, _ and - (at most 63)")
    segments = {s.id: s for s in defined_segments(args.dir)}
    segment = segments.get(args.segment)
    if segment is None:
        raise UnknownSegmentError(args.segment, sorted(segments))
    message = _message(args)
    tools = load_tools()
    store = await _store(tools)
    try:
        topics = read_topics(Path(args.dir) if args.dir else default_journeys_dir())
        preview = await SegmentStore(store.pool, [segment], topics=topics).preview(segment)
        if preview.matches_everyone and not args.confirm:
            raise BroadcastRefusedError(f"segment {segment.id} matches every customer ({preview.members}): "
                                        "pass --confirm to broadcast to everyone")
        await store.create(Broadcast(args.broadcast, segment.id, message, _when(args.at), args.rate,
                                     _local(args.local_time)))
        client = await connect(tools.core.temporal)
        await client.start_workflow(BROADCAST_WORKFLOW, BroadcastInput(args.broadcast, args.rate, args.batch_size),
                                    id=broadcast_workflow_id(args.broadcast), task_queue=tools.core.temporal.task_queue)
    finally:
        await store.pool.close()
    print(f"broadcast {args.broadcast} created: segment {segment.id} (about {preview.members} members now; the "
          f"audience is fixed when it starts), {message.channel} template {message.template_id}"
          f"{' topic ' + message.topic if message.topic else ''}, "
          f"at {_when(args.at).isoformat()}{' local time ' + args.local_time if args.local_time else ''}, "
          f"{args.rate:g}/s")
    return 0


async def _schedule(args: argparse.Namespace) -> int:
    tools = load_tools()
    store = await _store(tools)
    try:
        await store.reschedule(args.broadcast, _when(args.at), _local(args.local_time))
    finally:
        await store.pool.close()
    client = await connect(tools.core.temporal)
    await client.get_workflow_handle(broadcast_workflow_id(args.broadcast)).signal("rescheduled")
    print(f"broadcast {args.broadcast} moved to {_when(args.at).isoformat()}")
    return 0


def _bar(progress: BroadcastProgress) -> str:
    planned = progress.planned or 0
    filled = round(_BAR * progress.done / planned) if planned else 0
    return f"[{'#' * filled}{'.' * (_BAR - filled)}] {progress.done}/{planned}"


async def _status(args: argparse.Namespace) -> int:
    store = await _store(load_tools())
    try:
        progress = await store.progress(args.broadcast)
    finally:
        await store.pool.close()
    if args.json:
        print(json.dumps({"broadcast": progress.broadcast_id, "segment": progress.segment_id,
                          "state": progress.state.value, "planned": progress.planned, "sent": progress.sent,
                          "skipped": progress.skipped, "remaining": progress.remaining}))
        return 0
    print(f"broadcast {progress.broadcast_id} ({progress.segment_id}): {progress.state}")
    if progress.planned is None:
        print(f"  starts at {progress.send_at.isoformat()}; the audience is fixed then")
        return 0
    print(f"  {_bar(progress)}")
    print(f"  planned {progress.planned}, sent {progress.sent}, remaining {progress.remaining}")
    for reason, count in sorted(progress.skipped.items()):
        print(f"  skipped ({reason}): {count}")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    tools = load_tools()
    store = await _store(tools)
    try:
        state = await store.cancel(args.broadcast)
        progress = await store.progress(args.broadcast)
    finally:
        await store.pool.close()
    if state is not BroadcastState.CANCELLED:
        print(f"broadcast {args.broadcast} is already {state}")
        return 1
    client: Client = await connect(tools.core.temporal)
    try:
        await client.get_workflow_handle(broadcast_workflow_id(args.broadcast)).cancel()
    except RPCError:
        pass  # already closed: the store's state is what stops sends
    print(f"broadcast {args.broadcast} cancelled: {progress.sent} sent before the cancel, nobody after it")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broadcasts = commands.add_parser("broadcasts", help="send one message to a segment: create, schedule, status, "
                                                        "cancel")
    actions = broadcasts.add_subparsers(dest="broadcasts_command", metavar="ACTION")
    create = actions.add_parser("create", help="create and start a broadcast (now or --at)")
    create.add_argument("broadcast", help="the broadcast's id (lower-case, digits, _ and -)")
    create.add_argument("--segment", required=True, help="the segment whose members receive it")
    create.add_argument("--template", required=True, help="a template under the journeys folder's templates/")
    create.add_argument("--channel", default="email", choices=CHANNELS)
    create.add_argument("--at", help="when (ISO 8601; default now)")
    create.add_argument("--local-time", help="HH:MM in each recipient's own time zone, on or after --at")
    create.add_argument("--rate", type=float, default=50.0, help="sends per second (default 50)")
    create.add_argument("--batch-size", type=int, default=100, help="recipients per batch (default 100)")
    create.add_argument("--priority", default="", help="the sends' priority (caps; 'transactional' passes them)")
    create.add_argument("--topic", help="the subscription topic (journeys/topics.yaml): each recipient's consent to "
                                        "it on the channel decides their send (default: the channel opt-out only)")
    create.add_argument("--confirm", action="store_true", help="allow a segment that matches every customer")
    create.add_argument("--dir", help="the journeys folder (default: $EVENTFLOW_JOURNEYS_DIR)")
    schedule = actions.add_parser("schedule", help="move a broadcast that has not started")
    schedule.add_argument("broadcast")
    schedule.add_argument("--at", required=True)
    schedule.add_argument("--local-time")
    status = actions.add_parser("status", help="planned, sent, skipped by reason, remaining")
    status.add_argument("broadcast")
    status.add_argument("--json", action="store_true")
    cancel = actions.add_parser("cancel", help="stop a broadcast: nobody is sent to after this returns")
    cancel.add_argument("broadcast")
    for action, handler in ((create, _create), (schedule, _schedule), (status, _status), (cancel, _cancel)):
        action.set_defaults(handler=lambda args, run=handler: asyncio.run(run(args)))
