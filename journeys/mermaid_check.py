"""A strict checker for the Mermaid flowchart subset `journeys.diagram_mermaid` writes.

It accepts less than Mermaid does, never more: a ``flowchart`` header with a direction; node
lines ``id<open>"label"<close>`` in the seven shapes the renderer uses; edges ``a --> b`` and
``a -->|"label"| b``; ``classDef``, ``class`` and ``linkStyle`` lines; ``%%`` comments. Ids are
letters, digits and underscores and may not be a Mermaid keyword; a label holds no raw double
quote, and every ``#`` in it starts an entity (``#quot;``, ``#35;``); the only markup is
``<br/>``. Every edge and class names defined nodes, no node is defined twice, every ``class``
uses a defined ``classDef`` and every ``linkStyle`` index is an edge.

The tests also render the samples with the real Mermaid CLI where it is provisioned
(docs/architecture.md says when it is not); this checker runs everywhere, in milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import EventflowError

DIRECTIONS = frozenset({"TD", "TB", "BT", "LR", "RL"})
#: Words Mermaid's flowchart grammar reads as keywords, so never node ids.
KEYWORDS = frozenset({"end", "graph", "flowchart", "subgraph", "style", "classDef", "class", "click", "linkStyle",
                      "direction", "call", "href", "default"})
SHAPES = (("([", "])"), ("[[", "]]"), ("[/", "/]"), ("((", "))"), ("{{", "}}"), ("[", "]"), ("{", "}"))
_ID = r"[A-Za-z][A-Za-z0-9_]*"
_LABEL = r'"([^"]*)"'
_NODE = re.compile(rf"^({_ID})(\(\[|\[\[|\[/|\(\(|\{{\{{|\[|\{{){_LABEL}(\]\)|\]\]|/\]|\)\)|\}}\}}|\]|\}})$")
_EDGE = re.compile(rf"^({_ID}) -->(?:\|{_LABEL}\|)? ({_ID})$")
_STYLE = r"[a-z-]+:[#A-Za-z0-9.%()-]+(?:,[a-z-]+:[#A-Za-z0-9.%()-]+)*"
_CLASS_DEF = re.compile(rf"^classDef ({_ID}) {_STYLE}$")
_CLASS = re.compile(rf"^class ({_ID}(?:,{_ID})*) ({_ID})$")
_LINK_STYLE = re.compile(rf"^linkStyle (\d+(?:,\d+)*) {_STYLE}$")
_ENTITY = re.compile(r"#(?:[a-z]+|\d+);")


class MermaidSyntaxError(EventflowError):
    """The text is not in the accepted Mermaid subset; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Flowchart:
    """What a checked flowchart declares."""

    direction: str
    nodes: dict[str, str]
    edges: tuple[tuple[str, str, str], ...]
    classes: dict[str, frozenset[str]]


def _label(line: int, text: str) -> str:
    if not text.isprintable():
        raise MermaidSyntaxError(line, f"label {text!r} has a control character")
    rest = _ENTITY.sub("", text.replace("<br/>", ""))
    for bad in ("#", "<", ">"):
        if bad in rest:
            raise MermaidSyntaxError(line, f"label {text!r} has a raw {bad!r} (entity-encode it)")
    return text


def _id(line: int, name: str) -> str:
    if name in KEYWORDS:
        raise MermaidSyntaxError(line, f"{name!r} is a Mermaid keyword, not a node id")
    return name


def check_mermaid(text: str) -> Flowchart:
    """Checks ``text``; returns what it declares or raises `MermaidSyntaxError` at the first problem."""
    lines = [(number, raw.strip()) for number, raw in enumerate(text.splitlines(), start=1)]
    lines = [(n, s) for n, s in lines if s and not s.startswith("%%")]
    if not lines:
        raise MermaidSyntaxError(1, "empty diagram")
    number, header = lines[0]
    parts = header.split()
    if len(parts) != 2 or parts[0] != "flowchart" or parts[1] not in DIRECTIONS:
        raise MermaidSyntaxError(number, f"expected 'flowchart <{'|'.join(sorted(DIRECTIONS))}>', got {header!r}")
    nodes: dict[str, str] = {}
    edges: list[tuple[int, str, str, str]] = []
    class_defs: set[str] = set()
    classes: dict[str, set[str]] = {}
    link_styles: list[tuple[int, list[int]]] = []
    for number, line in lines[1:]:
        if match := _NODE.match(line):
            name, opening, label, closing = match.groups()
            if (opening, closing) not in SHAPES:
                raise MermaidSyntaxError(number, f"shape {opening}...{closing} is not one of the accepted shapes")
            if _id(number, name) in nodes:
                raise MermaidSyntaxError(number, f"node {name!r} is defined twice")
            nodes[name] = _label(number, label)
        elif match := _EDGE.match(line):
            source, label, target = match.groups()
            edges.append((number, _id(number, source), _id(number, target), _label(number, label or "")))
        elif match := _CLASS_DEF.match(line):
            class_defs.add(match.group(1))
        elif match := _CLASS.match(line):
            names, cls = match.groups()
            if cls not in class_defs:
                raise MermaidSyntaxError(number, f"class {cls!r} has no classDef before it")
            for name in names.split(","):
                classes.setdefault(cls, set()).add(name)
                if name not in nodes:
                    raise MermaidSyntaxError(number, f"class names undefined node {name!r}")
        elif match := _LINK_STYLE.match(line):
            link_styles.append((number, [int(i) for i in match.group(1).split(",")]))
        else:
            raise MermaidSyntaxError(number, f"not a node, edge, classDef, class or linkStyle line: {line!r}")
    for number, source, target, _ in edges:
        for name in (source, target):
            if name not in nodes:
                raise MermaidSyntaxError(number, f"edge names undefined node {name!r}")
    for number, indexes in link_styles:
        for index in indexes:
            if index >= len(edges):
                raise MermaidSyntaxError(number, f"linkStyle {index} but there are {len(edges)} edges")
    return Flowchart(parts[1], nodes, tuple((s, t, label) for _, s, t, label in edges),
                     {k: frozenset(v) for k, v in classes.items()})
