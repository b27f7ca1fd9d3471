"""The definition checks read the typed document, and report each typed node at its line in the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from journeys._definition_checks import check_content
from journeys._yaml import load_located
from journeys.event_schemas import catalogue
from journeys.loader import _event_types, load_templates
from journeys.model import DocumentShapeError, EntryRule, Listener, parse_document
from journeys.problems import Report
from journeys.steps import DelayStep
from tests.journeys.test_validation import GOOD, _folder, _line


def test_a_definition_reads_into_the_typed_document_as_written() -> None:
    document = parse_document(load_located(GOOD).data)

    assert (document.id, document.version, document.trigger_event) == ("demo", 1, "PurchaseCompleted")
    assert (document.entry_rule, document.entry_key) == (EntryRule.ONCE_PER_KEY, "payload.order_id")
    assert document.exits == (Listener("OrderRefunded"),)  # the key as written: resolved by the checks
    assert [step.id for step in document.steps] == ["hello", "pause", "choose"]


@pytest.mark.parametrize("data", [None, [], {"id": "x"}, {"id": "x", "version": 1, "trigger": "Purchase", "steps": []},
                                  {"id": "x", "version": 1, "trigger": {"event": "A"}, "steps": [{"id": "s"}]},
                                  {"id": "x", "version": "one", "trigger": {"event": "A"}, "steps": []}])
def test_a_shape_with_no_typed_reading_is_a_shape_error(data: object) -> None:
    with pytest.raises(DocumentShapeError):
        parse_document(data)


def test_the_checks_see_the_typed_document_and_name_the_line_of_its_node(tmp_path: Path) -> None:
    folder = _folder(tmp_path, GOOD)
    located = load_located(GOOD)
    document = parse_document(located.data)
    pause = document.steps[1]
    assert isinstance(pause, DelayStep)
    # Only the typed document says 99999999999w (the file says 1d): the checks judge what they are given.
    changed = dataclasses.replace(document, steps=(document.steps[0], dataclasses.replace(pause, duration="99999999999w"),
                                                   document.steps[2]))
    templates, _ = load_templates(folder / "templates")
    known, _ = catalogue(_event_types(), folder)
    report = Report("demo.yaml", located)

    check_content(report, changed, templates, known, render_templates=False, allowed_hosts=None)

    assert [(p.line, p.message.split(":")[0]) for p in report.problems] == [(_line(GOOD, "duration: 1d"),
                                                                            "delay.duration")]
