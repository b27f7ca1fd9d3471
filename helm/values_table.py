"""Generates the chart README's table of values and ``values.schema.json`` from ``values.yaml``.

``python helm/values_table.py`` rewrites the table between the markers in
``helm/eventflow/README.md`` and the JSON schema helm validates values against (so a typo such as
``consumer.keda.enable`` fails ``helm install`` and ``helm lint``). ``tests/helm`` fails when
either is out of date. A key with a ``# --`` comment is one documented value (its default may be
a map); a key without one is a section whose children are listed, and which accepts no other keys.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "eventflow"
BEGIN = "<!-- values-table:begin -->"
END = "<!-- values-table:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")


class UndocumentedValueError(Exception):
    """A value in values.yaml has neither a ``# --`` comment nor documented children."""


def _documented_paths(lines: list[str]) -> dict[tuple[str, ...], str]:
    """Maps each documented key path to its description, from the ``# --`` comment above it."""
    docs: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in lines:
        doc = _DOC.match(line)
        if doc:
            pending = doc.group("text")
            continue
        key = _KEY.match(line)
        if not key or line.lstrip().startswith("#") or line.lstrip().startswith("- "):
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group("key")))
        if pending is not None:
            docs[tuple(name for _, name in stack)] = pending
            pending = None
    return docs


def _rows(values: object, docs: dict[tuple[str, ...], str], path: tuple[str, ...] = ()) -> list[str]:
    if path in docs:
        default = json.dumps(values, sort_keys=True)
        return [f"| `{'.'.join(path)}` | `{default}` | {docs[path]} |"]
    if not isinstance(values, dict) or not values:
        raise UndocumentedValueError(f"{'.'.join(path)} has no '# --' comment in values.yaml")
    rows: list[str] = []
    for key, child in values.items():
        rows.extend(_rows(child, docs, (*path, str(key))))
    return rows


def table(chart: Path = CHART) -> str:
    """The Markdown table of every value with its default and meaning."""
    text = (chart / "values.yaml").read_text()
    docs = _documented_paths(text.splitlines())
    rows = _rows(yaml.safe_load(text), docs)
    return "\n".join(["| Key | Default | Description |", "| --- | --- | --- |", *rows])


# Choices the processes accept; the schema turns them into enums. A provider's "" is the unset
# default, which the templates refuse with a message saying what to choose.
_ENUMS: dict[str, list[str]] = {
    "logFormat": ["json", "console"],
    "providers.email.provider": ["", "outbox", "sendgrid", "smtp"],
    "providers.smtp.security": ["starttls", "tls", "none"],
    "providers.sms.provider": ["", "outbox", "twilio"],
    "providers.whatsapp.provider": ["", "outbox", "twilio"],
    "providers.push.provider": ["outbox", "fcm"],
    "providers.webpush.provider": ["outbox", "webpush"],
    "kafka.defaultEncoding": ["auto", "registry", "embedded", "json"],
    "schemaRegistry.subjectNameStrategy": ["topic", "record", "topic_record"],
    "topologySpread.whenUnsatisfiable": ["ScheduleAnyway", "DoNotSchedule"],
    "image.pullPolicy": ["Always", "IfNotPresent", "Never"],
    "catalog.source": ["files", "kafka"],
    # libpq's sslmode (asyncpg's PGSSLMODE); "" leaves it to the DSN.
    "database.tls.sslMode": ["", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
}
# Lists whose items are choices: the failover providers (each once).
_ITEM_ENUMS: dict[str, list[str]] = {
    "providers.email.providers": ["sendgrid", "smtp"],
}
# Numbers that must be above zero (a setting of the processes' PositiveInt or PositiveFloat type).
_POSITIVE = {"providers.circuitBreaker.failures", "providers.circuitBreaker.openSeconds", "providers.timeoutSeconds"}
# Values that take an integer or a string (a percentage, or a number KEDA wants quoted).
_INT_OR_STRING = {"consumer.pdb.maxUnavailable", "worker.pdb.maxUnavailable", "consumer.keda.lagThreshold"}


def _leaf_schema(path: str, default: object) -> dict[str, object]:
    if path in _ENUMS:
        return {"type": "string", "enum": _ENUMS[path]}
    if path in _ITEM_ENUMS:
        return {"type": "array", "items": {"type": "string", "enum": _ITEM_ENUMS[path]}, "uniqueItems": True}
    if path in _INT_OR_STRING:
        return {"type": ["integer", "string"]}
    if isinstance(default, bool):
        return {"type": "boolean"}
    if path in _POSITIVE:
        return {"type": "integer" if isinstance(default, int) else "number", "exclusiveMinimum": 0}
    if isinstance(default, int):
        return {"type": "integer", "minimum": 0}
    if isinstance(default, float):
        return {"type": "number", "minimum": 0}
    if isinstance(default, str):
        return {"type": "string"}
    if isinstance(default, list):
        return {"type": "array"}
    return {"type": "object"}


def _schema(values: object, docs: dict[tuple[str, ...], str], path: tuple[str, ...] = ()) -> dict[str, object]:
    if path in docs:
        return {**_leaf_schema(".".join(path), values), "description": docs[path]}
    assert isinstance(values, dict)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {str(key): _schema(child, docs, (*path, str(key))) for key, child in values.items()},
    }


def schema(chart: Path = CHART) -> str:
    """The JSON schema of values.yaml, as written to ``values.schema.json``."""
    text = (chart / "values.yaml").read_text()
    root = _schema(yaml.safe_load(text), _documented_paths(text.splitlines()))
    # Helm's conventional key for values shared with subcharts; harmless here, so allowed.
    properties = root["properties"]
    assert isinstance(properties, dict)
    properties["global"] = {"type": "object"}
    return json.dumps({"$schema": "https://json-schema.org/draft-07/schema#", **root}, indent=2) + "\n"


def readme_table(chart: Path = CHART) -> str:
    """The table currently in the README, between the markers."""
    readme = (chart / "README.md").read_text()
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write(chart: Path = CHART) -> None:
    """Rewrites the README's table and the values schema from values.yaml."""
    path = chart / "README.md"
    readme = path.read_text()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table(chart)}\n{END}{tail}")
    (chart / "values.schema.json").write_text(schema(chart))


if __name__ == "__main__":
    write()
    sys.exit(0)
