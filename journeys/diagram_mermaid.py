"""Draws a `journeys.diagram.Diagram` as a Mermaid flowchart.

Only a small subset of Mermaid is written (and `journeys.mermaid_check` accepts exactly that):
a ``flowchart TD`` header, one node per line with a quoted label in one of seven shapes, edges
``a --> b`` or ``a -->|"label"| b``, and for a highlighted run ``classDef``, ``class`` and
``linkStyle`` lines. Node ids are prefixed (``s_`` for steps) so that no step id can be a Mermaid
keyword such as ``end``; label text is entity-encoded so that no quote, ``#`` or angle bracket in
a condition can end the label early.
"""

from __future__ import annotations

from journeys.diagram import END, TRIGGER, Diagram, Shape

#: Opening and closing brackets of each shape.
SHAPES: dict[Shape, tuple[str, str]] = {
    Shape.START: ("([", "])"),
    Shape.ACTION: ("[", "]"),
    Shape.WAIT: ("{{", "}}"),
    Shape.CHOICE: ("{", "}"),
    Shape.COLLECT: ("[[", "]]"),
    Shape.CALL: ("[/", "/]"),
    Shape.STOP: ("((", "))"),
}
TAKEN_CLASS = "taken"
TAKEN_STYLE = "stroke:#d9480f,stroke-width:3px"
_ENTITIES = {'"': "#quot;", "#": "#35;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "|": "#124;"}


def node_id(step_id: str) -> str:
    """The Mermaid id of a diagram node."""
    if step_id == TRIGGER:
        return "j_trigger"
    if step_id == END:
        return "j_end"
    return f"s_{step_id}"


def escape(text: str) -> str:
    """Label text with every character that could end or reinterpret a quoted label entity-encoded."""
    # Control characters and line separators would split the line: they become spaces.
    return "".join(_ENTITIES.get(char, char) if char.isprintable() else " " for char in text)


def render_mermaid(diagram: Diagram) -> str:
    """The Mermaid source of ``diagram``, highlighting the path taken when one is marked."""
    lines = ["flowchart TD"]
    for node in diagram.nodes:
        opening, closing = SHAPES[node.shape]
        label = "<br/>".join(escape(line) for line in node.lines)
        lines.append(f'    {node_id(node.id)}{opening}"{label}"{closing}')
    for edge in diagram.edges:
        arrow = f'-->|"{escape(edge.label)}"|' if edge.label else "-->"
        lines.append(f"    {node_id(edge.source)} {arrow} {node_id(edge.target)}")
    taken_nodes = [node_id(n.id) for n in diagram.nodes if n.taken]
    taken_edges = [str(index) for index, e in enumerate(diagram.edges) if e.taken]
    if taken_nodes:
        lines.append(f"    classDef {TAKEN_CLASS} {TAKEN_STYLE}")
        lines.append(f"    class {','.join(taken_nodes)} {TAKEN_CLASS}")
    if taken_edges:
        lines.append(f"    linkStyle {','.join(taken_edges)} {TAKEN_STYLE}")
    return "\n".join(lines) + "\n"
