"""Reads and checks the subscription topics file, ``topics.yaml`` in the journeys folder.

The file lists topics (`activities.topics.Topic`); every problem names the file and line, as the
journey checks do. A folder without the file declares no topics: then no send step may name one.

```yaml
topics:
  - name: product_news
    title: {en: Product news, de: Produktneuigkeiten}
    description: {en: New products and features, de: Neue Produkte und Funktionen}
    channels: [email]
    default: opted_out          # explicit opt-in: nothing is sent until the customer subscribes
  - name: order_updates
    title: {en: Order updates, de: Bestellstatus}
    transactional: true         # receipts and shipping notices: cannot be unsubscribed
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from activities.topics import BASE_LOCALE, TOPIC_NAME, ConsentDefault, Topic, TopicCatalog
from core.vocabulary import CHANNELS
from journeys._yaml import YamlSyntaxError, read_document
from journeys.problems import Problem, Report

#: The topics file's name in the journeys folder.
TOPICS_FILE = "topics.yaml"
_KEYS = frozenset({"name", "title", "description", "channels", "transactional", "default"})


def load_topics(root: Path) -> tuple[TopicCatalog, list[Problem]]:
    """The topics declared in ``root/topics.yaml`` (none without the file) and every problem found."""
    path = root / TOPICS_FILE
    if not path.exists():
        return TopicCatalog(), []
    try:
        document = read_document(path)
    except YamlSyntaxError as exc:
        return TopicCatalog(), [Problem(str(path), exc.line or 1, exc.problem)]
    report = Report(str(path), document)
    topics = _topics(report)
    return (TopicCatalog(tuple(topics)) if not report.problems else TopicCatalog()), report.problems


def read_topics(root: Path) -> TopicCatalog:
    """The topics of ``root``; raises `JourneyDefinitionError` naming the first problem (processes at start-up)."""
    catalog, problems = load_topics(root)
    if problems:
        raise problems[0].error()
    return catalog


def send_topic_problems(topics: TopicCatalog, name: str, channels: Sequence[str]) -> list[str]:
    """What is wrong with sending on ``channels`` under the topic ``name``: undeclared, or not offered there.

    A journey's send step (with its fallback channel) and a broadcast are judged alike.
    """
    topic = topics.get(name)
    if topic is None:
        known = ", ".join(t.name for t in topics) or f"none: {TOPICS_FILE} declares no topics"
        return [f"unknown topic {name!r} (known: {known})"]
    return [f"topic {topic.name!r} is not sent on {channel} (its channels: {', '.join(topic.channels)})"
            for channel in channels if channel not in topic.channels]


def _topics(report: Report) -> list[Topic]:
    data: Any = report.document.data
    if data is None:
        return []
    if not isinstance(data, Mapping) or set(data) - {"topics"}:
        report.add((), "the topics file is a mapping with one key, topics (a list)")
        return []
    raw = data.get("topics") or []
    if not isinstance(raw, list):
        report.add(("topics",), "topics must be a list")
        return []
    topics: list[Topic] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        topic = _topic(report, index, item)
        if topic is None:
            continue
        if topic.name in seen:
            report.add(("topics", index, "name"), f"topic {topic.name!r} is declared twice")
            continue
        seen.add(topic.name)
        topics.append(topic)
    return topics


def _topic(report: Report, index: int, item: Any) -> Topic | None:
    where = ("topics", index)
    if not isinstance(item, Mapping):
        report.add(where, "a topic is a mapping (name, title, ...)")
        return None
    before = len(report.problems)
    for unknown in sorted(set(item) - _KEYS):
        report.add((*where, unknown), f"unknown topic key {unknown!r} (known: {', '.join(sorted(_KEYS))})")
    name = item.get("name")
    if not isinstance(name, str) or not TOPIC_NAME.match(name):
        report.add((*where, "name"), f"topic name {name!r} must be lower-case letters, digits and _ (a letter first)")
    title = _texts(report, (*where, "title"), item.get("title"), required=True)
    description = _texts(report, (*where, "description"), item.get("description") or {}, required=False)
    channels = item.get("channels", list(CHANNELS))
    if not isinstance(channels, list) or not channels or any(c not in CHANNELS for c in channels):
        report.add((*where, "channels"), f"channels must be a non-empty list of {', '.join(CHANNELS)}")
    transactional = item.get("transactional", False)
    if not isinstance(transactional, bool):
        report.add((*where, "transactional"), "transactional must be true or false")
    default = item.get("default", ConsentDefault.OPTED_IN.value)
    if default not in {d.value for d in ConsentDefault}:
        report.add((*where, "default"), f"default must be {' or '.join(d.value for d in ConsentDefault)}")
    elif transactional is True and "default" in item:
        report.add((*where, "default"), "a transactional topic has no default: it cannot be unsubscribed")
    if len(report.problems) > before:
        return None
    return Topic(name=str(name), title=title, channels=tuple(dict.fromkeys(channels)), description=description,
                 transactional=bool(transactional), default=ConsentDefault(default))


def _texts(report: Report, where: tuple[str | int, ...], value: Any, *, required: bool) -> dict[str, str]:
    if isinstance(value, str) and required:
        value = {BASE_LOCALE: value}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                 for k, v in value.items()):
        report.add(where, f"{where[-1]} must be text by locale, e.g. {{en: ..., de: ...}}")
        return {}
    if (required or value) and BASE_LOCALE not in value:
        report.add(where, f"{where[-1]} needs an {BASE_LOCALE!r} text (the fallback of every other locale)")
    return {str(k): str(v) for k, v in value.items()}

