"""Generates the chart README's table of values from ``values.yaml`` and its ``# --`` comments.

``python helm/values_table.py`` rewrites the table between the markers in
``helm/eventflow/README.md``; ``tests/helm`` fails when the README is out of date, so every value
keeps its documented default. A key with a ``# --`` comment is one row (its default may be a map);
a key without one is a section whose children are listed.
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


def readme_table(chart: Path = CHART) -> str:
    """The table currently in the README, between the markers."""
    readme = (chart / "README.md").read_text()
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write(chart: Path = CHART) -> None:
    """Rewrites the README's table from values.yaml."""
    path = chart / "README.md"
    readme = path.read_text()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table(chart)}\n{END}{tail}")


if __name__ == "__main__":
    write()
    sys.exit(0)
