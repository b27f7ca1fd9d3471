"""A journey's ``priority`` and ``caps``: validated with file:line, copied into its sends, carried by the snapshot."""

from __future__ import annotations

from pathlib import Path

import yaml

from activities.caps import Priority
from core.vocabulary import CHANNELS
from journeys.loader import validate_folder
from journeys.model import decode_snapshot
from journeys.steps import DigestStep, SendStep, walk
from tests.workflows.journey_harness import DEFAULT_TEMPLATES

JOURNEY = """\
id: promo
version: 1
priority: low
caps: "sms:week=3;all:month=10"
trigger:
  event: PurchaseCompleted
entry:
  rule: once_per_key
  key: payload.order_id
steps:
  - id: plain
    send: {channel: sms, template: note}
  - id: own
    send:
      channel: sms
      template: note
      priority: high
      caps: "sms:week=1,day=1"
  - id: roundup
    digest:
      event: OrderShipped
      window: 1d
      send: {channel: email, template: digest, caps: "all:month=0"}
"""


def _folder(tmp_path: Path, definition: str) -> Path:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "promo.yaml").write_text(definition)
    for template_id, body in DEFAULT_TEMPLATES.items():
        (tmp_path / "templates" / f"{template_id}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return tmp_path


def test_journey_priority_and_caps_reach_every_send_and_a_step_overrides_them(tmp_path: Path) -> None:
    report = validate_folder(_folder(tmp_path, JOURNEY))
    assert report.problems == ()
    (definition,) = report.definitions
    sends = {step.id: step.send for step, _ in walk(definition.steps) if isinstance(step, (SendStep, DigestStep))}

    assert (sends["plain"].priority, sends["plain"].caps) == (Priority.LOW, "all:month=10;sms:week=3")
    assert (sends["own"].priority, sends["own"].caps) == (Priority.HIGH, "all:month=10;sms:day=1,week=1")
    assert (sends["roundup"].priority, sends["roundup"].caps) == (Priority.LOW, "all:month=0;sms:week=3")
    decoded = decode_snapshot(definition.snapshot())
    assert decoded.steps == definition.steps  # the snapshot carries each send's effective options


def test_a_journey_without_priority_or_caps_snapshots_as_before(tmp_path: Path) -> None:
    plain = "\n".join(line for line in JOURNEY.splitlines() if not line.startswith(("priority", "caps")))
    plain = plain.replace('      priority: high\n', "").replace('      caps: "sms:week=1,day=1"\n', "")
    (definition,) = validate_folder(_folder(tmp_path, plain + "\n")).definitions

    assert "priority" not in str(definition.snapshot()["steps"][0])
    assert definition.snapshot()["steps"][0] == {"id": "plain", "send": {"channel": "sms", "template": "note"}}


def test_malformed_caps_and_unknown_priorities_name_the_file_and_line(tmp_path: Path) -> None:
    broken = JOURNEY.replace("priority: low", "priority: urgent").replace('caps: "all:month=0"', 'caps: "all:year=1"')
    lines = broken.splitlines()
    problems = {(p.line, p.message) for p in validate_folder(_folder(tmp_path, broken)).problems}

    assert (lines.index("priority: urgent") + 1,
            "priority: 'urgent' is not one of ['transactional', 'high', 'normal', 'low']") in problems
    assert (next(n for n, text in enumerate(lines, 1) if "all:year=1" in text),
            "steps.2.digest.send.caps: 'all:year=1' is not caps like email:day=2,week=5;all:month=20 "
            f"(scopes {', '.join((*CHANNELS, 'all'))}; windows day, week, month)") in problems


def test_a_window_given_twice_is_found_after_the_schema_at_its_line(tmp_path: Path) -> None:
    broken = JOURNEY.replace('caps: "sms:week=1,day=1"', 'caps: "sms:week=1,week=2"')
    lines = broken.splitlines()
    problems = validate_folder(_folder(tmp_path, broken)).problems

    assert [(p.line, p.message) for p in problems] == [
        (next(n for n, text in enumerate(lines, 1) if "week=2" in text),
         "caps 'sms:week=1,week=2': sms:week is given twice")]
