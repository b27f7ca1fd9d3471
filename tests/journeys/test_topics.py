"""The topics file and send steps that name a topic: problems name the file and the line."""

from __future__ import annotations

from pathlib import Path

import yaml

from activities.topics import ConsentDefault
from journeys.loader import validate_folder
from journeys.topics import load_topics
from tests.workflows.journey_harness import DEFAULT_TEMPLATES

TOPICS = """\
topics:
  - name: product_news
    title: {en: Product news, de: Produktneuigkeiten}
    channels: [email]
    default: opted_out
  - name: order_updates
    title: Order updates
    transactional: true
"""

JOURNEY = """\
id: demo
version: 1
trigger:
  event: PurchaseCompleted
entry:
  rule: every_time
steps:
  - id: news
    send: {channel: email, template: note, topic: product_news}
  - id: text
    send: {channel: sms, template: note, topic: product_news}
  - id: other
    send: {channel: email, template: note, topic: newsletter}
  - id: plain
    send: {channel: email, template: note}
"""


def _folder(tmp_path: Path, topics: str, journey: str = JOURNEY) -> Path:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "demo.yaml").write_text(journey)
    for template_id, body in DEFAULT_TEMPLATES.items():
        (tmp_path / "templates" / f"{template_id}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    (tmp_path / "topics.yaml").write_text(topics)
    return tmp_path


def test_the_repository_topics_file_is_valid() -> None:
    catalog, problems = load_topics(Path(__file__).resolve().parents[2] / "journeys")
    assert problems == []
    assert any(topic.transactional for topic in catalog)
    assert any(topic.default is ConsentDefault.OPTED_OUT for topic in catalog)


def test_a_send_step_names_a_declared_topic_of_its_channel(tmp_path: Path) -> None:
    report = validate_folder(_folder(tmp_path, TOPICS), render_templates=False)
    found = sorted((p.line, p.message) for p in report.problems)
    assert found == [
        (11, "topic 'product_news' is not sent on sms (its channels: email)"),
        (13, "unknown topic 'newsletter' (known: product_news, order_updates)"),
    ], found


def test_topic_file_mistakes_name_their_line(tmp_path: Path) -> None:
    broken = TOPICS + """\
  - name: Product-News
    title: {de: Nur Deutsch}
    channels: [fax]
    default: maybe
    colour: blue
  - name: order_updates
    title: Again
"""
    _, problems = load_topics(_folder(tmp_path, broken, "id: x\n"))
    found = sorted((p.line, p.message.split(" (")[0].split(",")[0]) for p in problems)
    assert found == [
        (9, "topic name 'Product-News' must be lower-case letters"),
        (10, "title needs an 'en' text"),
        (11, "channels must be a non-empty list of email"),
        (12, "default must be opted_in or opted_out"),
        (13, "unknown topic key 'colour'"),
        (14, "topic 'order_updates' is declared twice"),
    ], found


def test_without_a_topics_file_no_topic_can_be_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "")
    (folder / "topics.yaml").unlink()
    report = validate_folder(folder, render_templates=False)
    assert {p.message for p in report.problems} == {
        "unknown topic 'product_news' (known: none: topics.yaml declares no topics)",
        "unknown topic 'newsletter' (known: none: topics.yaml declares no topics)"}


NESTED = """\
id: demo
version: 1
trigger:
  event: PurchaseCompleted
entry:
  rule: one_active
steps:
  - id: wait
    wait_for:
      event: OrderShipped
      timeout: 1d
      received:
        - id: inner
          send: {channel: email, template: note, topic: newsletter}
  - id: roundup
    digest:
      event: OrderShipped
      window: 1d
      send: {channel: email, template: digest, fallback: sms, topic: product_news}
"""


def test_nested_sends_and_a_digests_send_are_checked_with_their_fallback(tmp_path: Path) -> None:
    report = validate_folder(_folder(tmp_path, TOPICS, NESTED), render_templates=False)
    found = sorted((p.line, p.message) for p in report.problems if "topic" in p.message)
    assert found == [
        (14, "unknown topic 'newsletter' (known: product_news, order_updates)"),
        (19, "topic 'product_news' is not sent on sms (its channels: email)"),
    ], report.problems
