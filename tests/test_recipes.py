"""The recipes of docs/extending.md cannot rot: a toy channel and a toy step added through exactly their files.

The source packages are copied, each recipe's edits (small insertions defined here) are applied to
the files its steps name and to nothing else, and a subprocess on the copy validates a journey that
uses the toy step and the toy channel, then runs it on the real Temporal server: the toy step notes
its label on the instance's trail, and the toy provider receives the send.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack import Endpoints

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "extending.md"
PACKAGES = ("core", "events", "activities", "journeys", "workflows", "store", "consumer", "devstack", "eventflow",
            "avro")
#: How many files adding a channel may touch (issue 20: "at most about 5").
CHANNEL_FILES_MAX = 5


def recipe_files(title: str) -> list[str]:
    """The file each numbered step of one recipe names first (in backticks), in order."""
    section = GUIDE.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([^`]+)`", section, flags=re.MULTILINE)


Edit = Callable[[str], str]


def insert(anchor: str, text: str, *, before: bool = False) -> Edit:
    """Puts ``text`` after (or before) ``anchor``, which must occur exactly once."""
    def edit(source: str) -> str:
        assert source.count(anchor) == 1, f"anchor {anchor!r} occurs {source.count(anchor)} times"
        return source.replace(anchor, text + anchor if before else anchor + text)
    return edit


def swap(old: str, new: str) -> Edit:
    """Replaces ``old``, which must occur exactly once, with ``new``."""
    def edit(source: str) -> str:
        assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times"
        return source.replace(old, new)
    return edit


def chain(*edits: Edit) -> Edit:
    def edit(source: str) -> str:
        for one in edits:
            source = one(source)
        return source
    return edit


def in_json(change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(source: str) -> str:
        document = json.loads(source)
        change(document)
        return json.dumps(document, indent=2)
    return edit


def _pigeon_in_schema(schema: dict[str, Any]) -> None:
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "enum" and "whatsapp" in value:
                    value.append("pigeon")
                elif key == "pattern" and "whatsapp|" in value and "|all)" in value:
                    node[key] = value.replace("|all)", "|pigeon|all)")
                else:
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
    visit(schema)


def _mark_in_schema(schema: dict[str, Any]) -> None:
    step = schema["$defs"]["step"]
    step["properties"]["mark"] = {"type": "object", "additionalProperties": False, "required": ["label"],
                                  "properties": {"label": {"type": "string"}}}
    step["oneOf"].append({"required": ["mark"]})


TOY_PROVIDER = '''\
"""A toy pigeon provider: appends each message to a JSON Lines file."""

from __future__ import annotations

import json
from pathlib import Path

from activities.channels import OutgoingMessage
from activities.notifications import SendResult
from activities.outcomes import SendStatus


class ToyPigeonChannel:
    name = "toy"
    reconciles = False
    call_timeout_seconds = 5.0

    def __init__(self, path: Path) -> None:
        self._path = path

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        with self._path.open("a") as out:
            out.write(json.dumps({"channel": message.channel, "to": message.to, "body": message.body}) + "\\n")
        return SendResult(status=SendStatus.SENT, provider=self.name, provider_message_id=message.idempotency_key)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None
'''

#: A channel (``pigeon``, served by the toy provider), as docs/extending.md says to add one. Not named
#: ``push``: that is a real channel now.
CHANNEL: dict[str, Edit] = {
    "core/vocabulary.py": chain(
        swap('\n\n\n#: Every channel name', '\n    PIGEON = "pigeon"\n\n\n#: Every channel name'),
        insert("ADDRESS_FIELD: dict[ChannelName, ContactField] = {\n", "    ChannelName.PIGEON: ContactField.EMAIL,\n")),
    "activities/<provider>.py": lambda _: TOY_PROVIDER,
    "core/settings/sending.py": insert(
        '    outbox_path: Path | None = env("EVENTFLOW_OUTBOX_PATH"',
        '    pigeon_provider: str = env("EVENTFLOW_PIGEON_PROVIDER", "outbox", "Pigeon channel implementation: '
        'outbox or toy.")\n', before=True),
    "activities/config.py": chain(
        insert("from activities.sms_twilio import", "from activities.pigeon_toy import ToyPigeonChannel\n",
               before=True),
        insert("    return built\n", '    built["pigeon"] = (ToyPigeonChannel(outbox.with_name("pigeon.jsonl"))\n'
                                     '                       if channels.pigeon_provider == "toy"\n'
                                     '                       else _unserved("pigeon", channels, outbox_channel))\n',
               before=True)),
    "journeys/journey.schema.json": in_json(_pigeon_in_schema),
}

#: A step type (``mark``: notes its label on the trail), as docs/extending.md says to add one.
STEP: dict[str, Edit] = {
    "journeys/steps.py": chain(
        insert('    WEBHOOK = "webhook"\n', '    MARK = "mark"\n'),
        insert("Step: TypeAlias = ", '@dataclass(frozen=True)\nclass MarkStep:\n    """Note a label on the trail."""'
               '\n\n    KIND: ClassVar[StepKind] = StepKind.MARK\n    id: str\n    label: str\n\n\n', before=True),
        swap("| ExitStep | WebhookStep\n", "| ExitStep | WebhookStep | MarkStep\n"),
        swap("ExitStep, WebhookStep)}", "ExitStep, WebhookStep, MarkStep)}")),
    "journeys/journey.schema.json": in_json(_mark_in_schema),
    "journeys/_definition_checks.py": chain(
        insert("    WebhookStep,\n", "    MarkStep,\n"),
        insert("            case DelayStep():\n                _check_delay",
               '            case MarkStep(label=label) if not label.strip():\n'
               '                report.add((*path, "mark", "label"), "mark.label is empty")\n', before=True)),
    "workflows/journey.py": chain(
        insert("        WebhookStep,\n", "        MarkStep,\n"),
        insert("            case _:\n                assert_never(step)",
               '            case MarkStep(label=label):\n                self._note(step.id, f"mark {label}")\n',
               before=True)),
    "journeys/diagram.py": chain(
        insert("    WebhookStep,\n", "    MarkStep,\n"),
        insert("        case _:\n            assert_never(step)",
               '        case MarkStep(label=label):\n            return (f"mark {label}",), Shape.ACTION\n',
               before=True)),
}

JOURNEY = """\
id: toy
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: every_time}
steps:
  - id: checked
    mark: {label: seen}
  - id: ping
    send: {channel: pigeon, template: ping}
"""
TEMPLATE = {"id": "ping", "default_locale": "en",
            "channels": {"pigeon": {"en": {"body": "Order {{ payload.order_id }}"}}}}

RUN = """\
import asyncio, json, os, sys, uuid
from pathlib import Path

import activities
from temporalio.client import Client

from activities.config import build_channels
from events.model import Customer, CustomerEvent
from journeys.loader import validate_folder
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.worker import build_worker

assert Path(activities.__file__).is_relative_to(Path.cwd()), activities.__file__  # the edited copy runs
folder, address, unique = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
report = validate_folder(folder)
assert not report.problems, [str(p) for p in report.problems]
(definition,) = report.definitions


async def main():
    client = await Client.connect(address)
    queue = f"recipes-{unique}"
    trigger = CustomerEvent(event_id=uuid.uuid4().hex, event_type="PurchaseCompleted",
                            occurred_at="2026-11-25T10:00:00+00:00",
                            customer=Customer(id=f"c-{unique}", email="ada@example.com", first_name="Ada"),
                            payload={"order_id": "ord-7"})
    async with build_worker(client, queue, build_channels()):
        status = await client.execute_workflow(JOURNEY_WORKFLOW, JourneyInput(definition.snapshot(), trigger),
                                               id=f"journey:recipes:{unique}", task_queue=queue,
                                               result_type=JourneyStatus)
    print(json.dumps({"trail": [[v.step_id, v.kind, v.note] for v in status.trail],
                      "sends": [[s.channel, str(s.status)] for s in status.sends]}))


asyncio.run(main())
# As eventflow.cli.run does: the SDK's runtime threads can abort CPython's teardown (sdk-python issue 300).
sys.stdout.flush()
os._exit(0)
"""


def _copy_with(edits: dict[str, Edit], into: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name, edit in edits.items():
        path = into / name.replace("<provider>", "pigeon_toy")
        path.write_text(edit(path.read_text() if path.exists() else ""))


def test_the_recipes_name_the_files_the_toy_channel_and_step_touch() -> None:
    assert recipe_files("A channel") == list(CHANNEL)
    assert len(CHANNEL) <= CHANNEL_FILES_MAX
    assert recipe_files("A step type") == list(STEP)


def test_a_toy_channel_and_step_added_through_the_recipes_validate_run_and_send(
        tmp_path: Path, endpoints: Endpoints, unique: str) -> None:
    copy = tmp_path / "src"
    merged = dict(CHANNEL)
    shared = merged.pop("journeys/journey.schema.json")
    merged.update({name: edit for name, edit in STEP.items() if name != "journeys/journey.schema.json"})
    merged["journeys/journey.schema.json"] = lambda source: STEP["journeys/journey.schema.json"](shared(source))
    _copy_with(merged, copy)
    journeys = tmp_path / "journeys"
    (journeys / "definitions").mkdir(parents=True)
    (journeys / "templates").mkdir()
    (journeys / "definitions" / "toy.yaml").write_text(JOURNEY)
    (journeys / "templates" / "ping.yaml").write_text(json.dumps(TEMPLATE))  # JSON is YAML
    outbox = tmp_path / "outbox" / "outbox.jsonl"
    outbox.parent.mkdir()
    environ = {key: value for key, value in os.environ.items() if not key.startswith("EVENTFLOW_")}
    environ.update({"PYTHONPATH": str(copy), "EVENTFLOW_DEV_MODE": "true", "EVENTFLOW_PIGEON_PROVIDER": "toy",
                    "EVENTFLOW_OUTBOX_PATH": str(outbox)})

    done = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN), str(journeys), endpoints.temporal_address,
                           unique], cwd=copy, env=environ, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads(done.stdout.splitlines()[-1])
    assert ["checked", "mark", "mark seen"] in status["trail"], status
    assert status["sends"] == [["pigeon", "sent"]], status
    (delivered,) = [json.loads(line) for line in (outbox.parent / "pigeon.jsonl").read_text().splitlines()]
    assert delivered == {"channel": "pigeon", "to": "ada@example.com", "body": "Order ord-7"}
    assert not outbox.exists(), "the pigeon send reached the toy provider, not the outbox"
