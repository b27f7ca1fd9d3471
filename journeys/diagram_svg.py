"""Draws a `journeys.diagram.Diagram` as a standalone SVG 1.1 image with a simple layered layout.

Layout: each node's layer is its longest distance from the trigger (the graph is a DAG), so every
edge points downwards; within a layer nodes keep reading order and the layer is centred. Box
sizes come from the text (a monospace font, so width is characters times a fixed advance). Edges
are straight lines with an arrowhead, labelled near their target. Every text is XML-escaped and
every node is a ``<g>`` whose ``id`` and ``<title>`` carry its step id, so the image can be
searched and linked. Nothing here measures fonts or calls a browser: the output is a pure
function of the diagram.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from journeys.diagram import END, TRIGGER, Diagram, Node, Shape

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
_CHAR_WIDTH = 7.2
_LINE_HEIGHT = 16
_PADDING = 10
_LAYER_GAP = 56
_NODE_GAP = 28
_MARGIN = 20
_MAX_CHARS = 60
_FILL = {Shape.START: "#e7f5ff", Shape.ACTION: "#ebfbee", Shape.WAIT: "#fff9db", Shape.CHOICE: "#f3f0ff",
         Shape.COLLECT: "#e6fcf5", Shape.CALL: "#fff4e6", Shape.STOP: "#f1f3f5"}
_TAKEN = "#d9480f"


@dataclass(frozen=True)
class _Box:
    node: Node
    lines: tuple[str, ...]
    x: float
    y: float
    width: float
    height: float

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


def _clip(line: str) -> str:
    return line if len(line) <= _MAX_CHARS else line[:_MAX_CHARS - 1] + "…"


def layers(diagram: Diagram) -> dict[str, int]:
    """Each node's layer: its longest path from the trigger."""
    layer = {node.id: 0 for node in diagram.nodes}
    order = {node.id: index for index, node in enumerate(diagram.nodes)}
    # Every edge goes forwards in reading order (an arm's end goes to the step after its owner,
    # which follows the arm), so one pass over the edges in their sources' order settles it.
    for edge in sorted(diagram.edges, key=lambda e: order[e.source]):
        layer[edge.target] = max(layer[edge.target], layer[edge.source] + 1)
    return layer


def _boxes(diagram: Diagram) -> tuple[list[_Box], float, float]:
    by_layer: dict[int, list[Node]] = defaultdict(list)
    layer = layers(diagram)
    for node in diagram.nodes:
        by_layer[layer[node.id]].append(node)
    sized: dict[int, list[tuple[Node, tuple[str, ...], float, float]]] = {}
    for index, nodes in sorted(by_layer.items()):
        row: list[tuple[Node, tuple[str, ...], float, float]] = []
        for node in nodes:
            lines = tuple(_clip(line) for line in node.lines)
            width = max(len(line) for line in lines) * _CHAR_WIDTH + 2 * _PADDING
            row.append((node, lines, width, float(len(lines) * _LINE_HEIGHT + 2 * _PADDING)))
        sized[index] = row
    total_width = max(sum(w for _, _, w, _ in row) + _NODE_GAP * (len(row) - 1) for row in sized.values())
    boxes: list[_Box] = []
    y = float(_MARGIN)
    for row in sized.values():
        row_width = sum(w for _, _, w, _ in row) + _NODE_GAP * (len(row) - 1)
        x = _MARGIN + (total_width - row_width) / 2
        height = max(h for _, _, _, h in row)
        for node, lines, width, box_height in row:
            boxes.append(_Box(node, lines, x, y + (height - box_height) / 2, width, box_height))
            x += width + _NODE_GAP
        y += height + _LAYER_GAP
    return boxes, total_width + 2 * _MARGIN, y - _LAYER_GAP + _MARGIN


def _shape(box: _Box, stroke: str, width: float) -> str:
    fill = _FILL[box.node.shape]
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"'
    rounded = {Shape.START: box.height / 2, Shape.STOP: box.height / 2, Shape.WAIT: 12, Shape.CHOICE: 2,
               Shape.CALL: 0, Shape.COLLECT: 4, Shape.ACTION: 4}[box.node.shape]
    rect = (f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" '
            f'rx="{rounded:.1f}" {common}/>')
    if box.node.shape is Shape.CHOICE:
        # A choice is a box with a double top rule: cheaper to read than a rhombus of long text.
        rect += (f'<line x1="{box.x:.1f}" y1="{box.y + 4:.1f}" x2="{box.x + box.width:.1f}" y2="{box.y + 4:.1f}" '
                 f'stroke="{stroke}" stroke-width="1"/>')
    return rect


def render_svg(diagram: Diagram) -> str:
    """The SVG document of ``diagram``; a run's path (when marked) is drawn thick and orange."""
    boxes, width, height = _boxes(diagram)
    at = {box.node.id: box for box in boxes}
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{SVG_NAMESPACE}" version="1.1" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
        f"<title>{escape(f'journey {diagram.journey_id} v{diagram.version}')}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/></marker>'
        f'<marker id="arrow-taken" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" '
        f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{_TAKEN}"/></marker></defs>',
    ]
    for edge in diagram.edges:
        source, target = at[edge.source], at[edge.target]
        x1, y1 = source.centre, source.y + source.height
        x2, y2 = target.centre, target.y
        if y2 <= y1:  # never for a layered DAG; kept so a bad graph still draws
            y2 = y1 + _LAYER_GAP / 2
        stroke, marker, thick = (_TAKEN, "arrow-taken", 3) if edge.taken else ("#495057", "arrow", 1.2)
        out.append(f'<g class="edge{" taken" if edge.taken else ""}">'
                   f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                   f'stroke-width="{thick}" marker-end="url(#{marker})"/>')
        if edge.label:
            label = _clip(edge.label)
            # Nearer the target than the middle: siblings' edges have drawn apart there.
            mx, my = x1 + (x2 - x1) * 0.65, y1 + (y2 - y1) * 0.65
            out.append(f'<rect x="{mx - len(label) * _CHAR_WIDTH / 2 - 3:.1f}" y="{my - 9:.1f}" '
                       f'width="{len(label) * _CHAR_WIDTH + 6:.1f}" height="16" fill="#ffffff" opacity="0.85"/>'
                       f'<text x="{mx:.1f}" y="{my + 3:.1f}" text-anchor="middle" fill="#495057">'
                       f"{escape(label)}</text>")
        out.append("</g>")
    for box in boxes:
        node = box.node
        stroke, thick = (_TAKEN, 3.0) if node.taken else ("#495057", 1.2)
        element_id = {TRIGGER: "trigger", END: "end"}.get(node.id, f"step-{node.id}")
        out.append(f'<g id={quoteattr(element_id)} class={quoteattr(f"node {node.kind}" + (" taken" if node.taken else ""))}>'
                   f"<title>{escape(node.id)}</title>{_shape(box, stroke, thick)}")
        for number, line in enumerate(box.lines):
            weight = ' font-weight="bold"' if number == 0 else ""
            out.append(f'<text x="{box.x + _PADDING:.1f}" y="{box.y + _PADDING + (number + 0.8) * _LINE_HEIGHT:.1f}"'
                       f"{weight}>{escape(line)}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
