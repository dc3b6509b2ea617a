"""How each node kind looks, decided once for the matplotlib, DOT and TikZ renderers.

Data inputs are blue circles, index patterns orange squares, identities grey diamonds,
all-ones vectors green triangles, scalars purple hexagons, pre-contracted constants
yellow octagons; any other kind is a grey pentagon (an ellipse in TikZ).

>>> pattern = style_of("pattern")
>>> pattern.description, pattern.fill, pattern.marker, pattern.dot_shape, pattern.tikz_shape
('index pattern', '#f0a15e', 's', 'box', 'rectangle')
>>> style_of("something new").description
'other'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeStyle:
    """The look of one node kind in every renderer.

    Attributes:
        description: the legend's text.
        fill, text_colour: colours (``#rrggbb`` or a colour name) of the shape and its label.
        marker: the matplotlib marker of the legend entry.
        dot_shape: the Graphviz ``shape``.
        tikz_shape: the TikZ shape options.
        tikz_size: the TikZ ``minimum size``.
    """

    description: str
    fill: str
    text_colour: str
    marker: str
    dot_shape: str
    tikz_shape: str
    tikz_size: str = "4mm"


_POLYGON = "regular polygon, regular polygon sides={}"

STYLES: dict[str, NodeStyle] = {
    "input": NodeStyle("data", "#4c72b0", "white", "o", "circle", "circle", "6.5mm"),
    "pattern": NodeStyle("index pattern", "#f0a15e", "black", "s", "box", "rectangle", "5.5mm"),
    "identity": NodeStyle("identity", "#b0b0b0", "black", "D", "diamond", "diamond"),
    "ones": NodeStyle("ones", "#6fbf73", "black", "^", "triangle", _POLYGON.format(3)),
    "scalar": NodeStyle("scalar", "#a58fd0", "black", "h", "hexagon", _POLYGON.format(6), "6.5mm"),
    "constant": NodeStyle("pre-contracted", "#e8d37a", "black", "8", "octagon", _POLYGON.format(8)),
}
"""The style of each known node kind (:attr:`tnconv.network.Node.kind`)."""

OTHER = NodeStyle("other", "#dddddd", "black", "p", "pentagon", "ellipse")
"""The style of a node kind not in :data:`STYLES`."""

EDGE_COLOUR = "#444444"
"""The colour of lines and shape outlines (matplotlib and DOT)."""


def style_key(kind: str) -> str:
    """``kind`` if it has a style of its own, else ``"other"`` (the name renderers group it under)."""
    return kind if kind in STYLES else "other"


def style_of(kind: str) -> NodeStyle:
    """The style of node kind ``kind``: its entry in :data:`STYLES`, else :data:`OTHER`."""
    return STYLES.get(kind, OTHER)
