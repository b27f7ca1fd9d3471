"""Safe YAML loading that remembers where each value came from, so errors can name a line.

Anchors and aliases (``&base`` / ``*base`` / ``<<: *base``) are refused: a journey file is small
enough to write out, and an alias can point at its own ancestor (a recursive document) or expand
exponentially ("billion laughs"). Nesting is bounded too, so no document can exhaust the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Position of a value in the document: mapping keys and list indexes from the root.
DocPath = tuple[str | int, ...]
#: How deeply mappings and lists may nest in one document.
MAX_NESTING = 64


class YamlSyntaxError(ValueError):
    """The text is not valid YAML; ``line`` is 1-based."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


@dataclass(frozen=True)
class LocatedDocument:
    """Plain data (dicts, lists, scalars) plus the 1-based line of every value in it."""

    data: Any
    lines: dict[DocPath, int] = field(default_factory=dict)

    def line_of(self, path: DocPath) -> int | None:
        """The line of ``path``, or of its closest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing an alias where it appears (before it can build a cycle)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YamlSyntaxError(f"YAML aliases (*{event.anchor}) are not supported in journey files: write "
                                  "the value out (an alias can also make a document refer to itself)",
                                  event.start_mark.line + 1)
        return super().compose_node(parent, index)


def load_located(text: str) -> LocatedDocument:
    """Parses ``text`` with the safe loader; raises `YamlSyntaxError` with the line on bad YAML."""
    try:
        loader = _NoAliasLoader(text)  # reads the first characters: a control character is refused here
    except yaml.reader.ReaderError as exc:
        raise YamlSyntaxError(f"not valid YAML: {exc.reason} (#x{exc.character:04x})",
                              text[:exc.position].count("\n") + 1) from exc
    try:
        node = loader.get_single_node()
        lines: dict[DocPath, int] = {}
        data = None if node is None else _construct(loader, node, (), lines)
        return LocatedDocument(data, lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(f"not valid YAML: {exc.problem or exc}", mark.line + 1 if mark else 1) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"not valid YAML: {exc}", 1) from exc
    except RecursionError as exc:
        raise YamlSyntaxError(f"not valid YAML: nested deeper than {MAX_NESTING} levels", 1) from exc
    finally:
        loader.dispose()


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: DocPath, lines: dict[DocPath, int]) -> Any:
    line = node.start_mark.line + 1
    if len(path) > MAX_NESTING:
        raise YamlSyntaxError(f"nested deeper than {MAX_NESTING} levels", line)
    lines[path] = line
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSyntaxError("mapping keys must be plain values, not lists or mappings",
                                      key_node.start_mark.line + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError("merge keys (<<) are not supported in journey files: write the keys out",
                                      key_node.start_mark.line + 1)
            key = _scalar(loader, key_node)
            key = key if isinstance(key, str) else str(key)
            result[key] = _construct(loader, value_node, (*path, key), lines)
            # A value is reported at its key's line: that is where a block mapping or list starts.
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, index), lines) for index, item in enumerate(node.value)]
    return _scalar(loader, node)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        # The safe loader's constructors raise plain errors, e.g. for a date like 2026-13-45.
        raise YamlSyntaxError(f"not valid YAML: {node.value!r} cannot be read ({exc})",
                              node.start_mark.line + 1) from exc


def read_document(path: Path) -> LocatedDocument:
    """Reads and parses one YAML file; every failure is a `YamlSyntaxError` with a line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlSyntaxError(f"cannot be read: {exc.strerror or exc}", 1) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError("is not UTF-8 text", raw[:exc.start].count(b"\n") + 1) from exc
    return load_located(text)
