"""Diagrams as Graphviz DOT text (:func:`to_dot`); needs no Graphviz binary.

>>> import tnconv
>>> print(to_dot(tnconv.networks.conv((2, 4, 8), (6, 4, 3))).splitlines()[0])
graph tnconv {
"""

from __future__ import annotations

from ..symbolic.network import TensorNetwork
from .graph import network_to_draw
from .labels import leg_label, node_label
from .layout import diagram
from .style import EDGE_COLOUR, style_of


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(network: TensorNetwork, *, simplified: bool = False, show_sizes: bool = False) -> str:
    """The network as an undirected Graphviz graph (DOT text).

    Nodes become Graphviz nodes (shape and colour by kind), legs become edges labelled
    with their names; output legs end in plain-text nodes named after the leg, and a leg
    joining more than two places meets at a small point node. Each node has a ``pos``
    from tnconv's layout, so ``neato -n`` reproduces the matplotlib picture; ``dot`` and
    ``neato`` lay it out afresh.

    >>> import tnconv
    >>> text = to_dot(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
    >>> '"x" -- "pi1" [label="i1"];' in text
    True
    """
    network = network_to_draw(network, simplified)
    layout = diagram(network)
    nodes = {node.name: node for node in network.nodes}
    lines = [
        "graph tnconv {",
        '  graph [overlap=false, splines=true, fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=11, style=filled, penwidth=1];',
        f'  edge [fontname="Helvetica", fontsize=9, color={_dot_string(EDGE_COLOUR)}];',
    ]
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        pos = f'pos="{72 * x:.1f},{72 * y:.1f}"'
        if vertex.node is not None:
            node = nodes[vertex.node]
            style = style_of(node.kind)
            attrs = f"label={_dot_string(node_label(node))}, shape={style.dot_shape}, "
            attrs += f"fillcolor={_dot_string(style.fill)}, fontcolor={_dot_string(style.text_colour)}, {pos}"
        else:
            text = _dot_string(leg_label(network, vertex.leg, show_sizes))
            if vertex.kind == "junction":
                xlabel = f", xlabel={text}" if layout.label_vertex(vertex.leg) == vertex.id else ""
                attrs = f'shape=point, width=0.08, fillcolor="black"{xlabel}, {pos}'
            elif vertex.kind == "sum":
                attrs = f'shape=circle, width=0.08, label="", fillcolor="white", xlabel={text}, {pos}'
            else:
                attrs = f'shape=plaintext, style="", label={text}, {pos}'
        lines.append(f"  {_dot_string(vertex.id)} [{attrs}];")
    for edge in layout.edges:
        label = f" [label={_dot_string(leg_label(network, edge.leg, show_sizes))}]" if edge.labelled else ""
        lines.append(f"  {_dot_string(edge.a)} -- {_dot_string(edge.b)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"
