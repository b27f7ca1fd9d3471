"""Draws a `journeys.diagram.Diagram` as indented text for a terminal.

One line per node in reading order, indented by nesting depth; under a node that chooses, or
whose next step is not the next line (the end of an arm), one line per way out with its label. A run's path is marked with ``*`` on the nodes and ways it took.
"""

from __future__ import annotations

from journeys.diagram import END, TRIGGER, Diagram, Node


def _name(diagram: Diagram, node_id: str) -> str:
    return "end" if node_id == END else node_id


def _mark(taken: bool) -> str:
    return "* " if taken else "  "


def _head(node: Node) -> str:
    if node.id in (TRIGGER, END):
        return " · ".join(node.lines)
    step_id, *rest = node.lines
    return f"[{step_id}] {' · '.join(rest)}"


def render_text(diagram: Diagram) -> str:
    """The text form of ``diagram``."""
    out = [f"journey {diagram.journey_id} v{diagram.version}"]
    nodes = diagram.nodes
    for index, node in enumerate(nodes):
        indent = "    " * node.depth
        out.append(f"{_mark(node.taken)}{indent}{_head(node)}")
        ways = diagram.outgoing(node.id)
        following = nodes[index + 1].id if index + 1 < len(nodes) else None
        # A plain step that goes on to the next line needs no arrow; the end of an arm does.
        if any(edge.label or edge.target != following for edge in ways):
            for edge in ways:
                out.append(f"{_mark(edge.taken)}{indent}    {edge.label or 'next'} -> {_name(diagram, edge.target)}")
    return "\n".join(out) + "\n"
