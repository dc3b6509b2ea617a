"""Diagrams of tensor networks: matplotlib pictures, Graphviz DOT and TikZ.

All three draw the same graph with the same layout (:mod:`tnconv.diagram`): one shape per
node kind — data inputs (blue circles), index patterns (orange squares), identities (grey
diamonds), all-ones vectors (green triangles), scalars (purple hexagons) — one line per
contracted leg labelled with its name, open lines for the output legs, and a small black
dot where a leg joins more than two places.

Only :func:`draw` needs matplotlib (``pip install tnconv[plot]``); :func:`to_dot` and
:func:`to_latex` return text and need no binary at run time.

>>> import tnconv
>>> tn = tnconv.networks.conv((2, 4, 8), (6, 4, 3))
>>> print(to_dot(tn).splitlines()[0])
graph tnconv {
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diagram import Diagram, Vertex, diagram
from .network import Node, TensorNetwork

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
"""File formats :func:`draw` writes, chosen by the path's extension."""

# kind: (description, fill colour, text colour, matplotlib marker, Graphviz shape, TikZ shape)
STYLES: dict[str, tuple[str, str, str, str, str, str]] = {
    "input": ("data", "#4c72b0", "white", "o", "circle", "circle"),
    "pattern": ("index pattern", "#f0a15e", "black", "s", "box", "rectangle"),
    "identity": ("identity", "#b0b0b0", "black", "D", "diamond", "diamond"),
    "ones": ("ones", "#6fbf73", "black", "^", "triangle", "regular polygon, regular polygon sides=3"),
    "scalar": ("scalar", "#a58fd0", "black", "h", "hexagon", "regular polygon, regular polygon sides=6"),
    "constant": ("pre-contracted", "#e8d37a", "black", "8", "octagon", "regular polygon, regular polygon sides=8"),
}
_OTHER = ("other", "#dddddd", "black", "p", "pentagon", "ellipse")
_EDGE_COLOUR = "#444444"
_LEGEND_ORDER = (*STYLES, "other", "junction", "sum")
_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_NAME = re.compile(r"^([A-Za-z]+?)(\d*)('*)$")


def _style(kind: str) -> tuple[str, str, str, str, str, str]:
    return STYLES.get(kind, _OTHER)


def _network(network: TensorNetwork, simplified: bool) -> TensorNetwork:
    if not isinstance(network, TensorNetwork):
        raise TypeError(f"network must be a tnconv.TensorNetwork, got {type(network).__name__}")
    return network.simplify() if simplified else network


def leg_label(network: TensorNetwork, leg: str, show_sizes: bool = False) -> str:
    """The text written next to ``leg``: its name, and ``=size`` with ``show_sizes``.

    >>> import tnconv
    >>> leg_label(tnconv.networks.conv((1, 2, 5), (3, 2, 3)), "o1", show_sizes=True)
    'o1=3'
    """
    return f"{leg}={network.size(leg)}" if show_sizes else leg


def scalar_text(value: float) -> str:
    """``1/648`` for the reciprocal of an integer (normalisations such as ``1/(N·|O|²)``), else ``0.25``.

    >>> scalar_text(1 / 648), scalar_text(2.5)
    ('1/648', '2.5')
    """
    if value != 0 and abs(1 / value - round(1 / value)) < 1e-9 * abs(1 / value) and abs(value) < 1:
        return f"{'-' if value < 0 else ''}1/{abs(round(1 / value))}"
    return f"{value:.4g}"


def node_label(node: Node) -> str:
    """A node's text in pictures: ``Π₁`` for pattern ``pi1``, ``δ``, ``1``, a scalar's value, else the name.

    >>> import tnconv
    >>> [node_label(node) for node in tnconv.networks.conv((1, 2, 5), (3, 2, 3)).nodes]
    ['x', 'Π₁', 'w']
    """
    if node.kind == "pattern":
        match = re.match(r"^pi(\d*)('*)$", node.name)
        return "Π" + (match.group(1).translate(_SUBSCRIPTS) + match.group(2) if match else "")
    if node.kind == "identity":
        return "δ"
    if node.kind == "ones":
        return "1"
    if node.kind == "scalar":
        return "×" + scalar_text(node.value)
    if node.kind == "constant" and node.network is not None and node.network.nodes:
        return "Σ" + node_label(node.network.nodes[0])
    return node.name


# ----------------------------------------------------------------------------- matplotlib
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError("tnconv.draw needs matplotlib, an optional dependency: pip install tnconv[plot]") from error


def _format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"path must end in one of {', '.join('.' + f for f in FORMATS)}, got {str(path)!r}")
    return suffix


def draw(
    network: TensorNetwork,
    path: str | Path | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    simplified: bool = False,
    show_sizes: bool = False,
) -> Figure:
    """Draw a tensor-network diagram with matplotlib.

    Args:
        network: any :class:`~tnconv.network.TensorNetwork`.
        path: if given, the figure is saved there; ``.png``, ``.svg`` or ``.pdf`` by
            extension (SVG text stays text, so labels are searchable).
        ax: draw into these axes instead of a new figure.
        title: a title above the diagram.
        simplified: draw ``network.simplify()`` instead.
        show_sizes: label legs ``name=size`` instead of ``name``.

    Returns:
        The matplotlib ``Figure``. Without ``ax`` and ``path`` it is a pyplot figure (so
        ``plt.show()`` displays it); with ``path`` it is a stand-alone figure rendered by
        a non-interactive backend (Agg for PNG), so saving never needs a display.

    Raises:
        ImportError: if matplotlib is missing (``pip install tnconv[plot]``).

    >>> import tnconv
    >>> fig = tnconv.draw(tnconv.networks.conv((2, 4, 8, 8), (6, 4, 3, 3)), title="conv2d")
    >>> fig.axes[0].get_title()
    'conv2d'
    """
    network = _network(network, simplified)
    fmt = _format(path) if path is not None else None
    _require_matplotlib()
    from matplotlib import rc_context

    layout = diagram(network)
    xmin, xmax, ymin, ymax = layout.extent
    if ax is None:
        size = (min(14.0, max(3.5, 1.25 * (xmax - xmin + 1.4))), min(14.0, max(3.0, 1.25 * (ymax - ymin + 1.6))))
        if path is None:
            import matplotlib.pyplot as plt

            figure = plt.figure(figsize=size)
        else:
            from matplotlib.figure import Figure

            figure = Figure(figsize=size)
        ax = figure.add_subplot()
    figure = ax.figure
    _draw_on(ax, layout, show_sizes)
    if title is not None:
        ax.set_title(title)
    if path is not None:
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "tnconv"}):
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None
            figure.savefig(path, format=fmt, bbox_inches="tight", metadata=metadata)
    return figure


def _draw_on(ax: Axes, layout: Diagram, show_sizes: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyBboxPatch, PathPatch, RegularPolygon
    from matplotlib.path import Path as MplPath

    network = layout.network
    nodes = {node.name: node for node in network.nodes}
    box = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    for index, edge in enumerate(layout.edges):
        start, control, end = layout.curve(index)
        path = MplPath([start, control, end], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
        ax.add_patch(PathPatch(path, facecolor="none", edgecolor=_EDGE_COLOUR, linewidth=1.3, zorder=1))
        if edge.labelled:
            x, y = layout.edge_middle(index)
            text = leg_label(network, edge.leg, show_sizes)
            ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox=box, zorder=3)
    kinds_seen: dict[str, None] = {}
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        if vertex.node is not None:
            node = nodes[vertex.node]
            kinds_seen.setdefault(node.kind if node.kind in STYLES else "other")
            _, fill, ink, *_ = _style(node.kind)
            ax.add_patch(_node_patch(node.kind, x, y, fill, Circle, FancyBboxPatch, RegularPolygon))
            text = node_label(node)
            size = 9 if len(text) <= 4 else max(5.5, 9 * 4 / len(text))
            ax.text(x, y, text, ha="center", va="center", fontsize=size, color=ink, zorder=5)
        elif vertex.kind == "junction":
            kinds_seen.setdefault("junction")
            ax.add_patch(Circle((x, y), 0.055, facecolor="black", edgecolor="none", zorder=4))
            if layout.label_vertex(vertex.leg) == vertex.id:
                _end_label(ax, layout, vertex, leg_label(network, vertex.leg, show_sizes), box, offset=(0.1, 0.1))
        elif vertex.kind == "open":
            _end_label(ax, layout, vertex, leg_label(network, vertex.leg, show_sizes), box)
        elif vertex.kind == "sum":
            kinds_seen.setdefault("sum")
            ax.add_patch(Circle((x, y), 0.05, facecolor="white", edgecolor=_EDGE_COLOUR, linewidth=1.2, zorder=4))
            _end_label(ax, layout, vertex, leg_label(network, vertex.leg, show_sizes), box)
    handles = []
    for kind in sorted(kinds_seen, key=_LEGEND_ORDER.index):
        if kind == "junction":
            handles.append(Line2D([], [], marker="o", color="black", linestyle="", markersize=4, label="hyperedge"))
        elif kind == "sum":
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    color=_EDGE_COLOUR,
                    markerfacecolor="white",
                    linestyle="",
                    markersize=5,
                    label="summed leg",
                )  # fmt: skip
            )
        else:
            name, fill, _, marker, *_ = _style(kind)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker=marker,
                    color=fill,
                    markeredgecolor=_EDGE_COLOUR,
                    linestyle="",
                    markersize=8,
                    label=name,
                )  # fmt: skip
            )
    ax.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 4),
        frameon=False, fontsize=7, handletextpad=0.3, columnspacing=1.0,
    )  # fmt: skip
    xmin, xmax, ymin, ymax = layout.extent
    ax.set_xlim(xmin - 0.6, xmax + 0.6)
    ax.set_ylim(ymin - 0.5, ymax + 0.5)
    ax.set_aspect("equal")
    ax.set_axis_off()


def _node_patch(kind: str, x: float, y: float, fill: str, circle: Any, fancy_box: Any, polygon: Any) -> Any:
    style = {"facecolor": fill, "edgecolor": _EDGE_COLOUR, "linewidth": 1.0, "zorder": 4}
    if kind == "input":
        return circle((x, y), 0.22, **style)
    if kind == "pattern":
        half = 0.17
        return fancy_box((x - half, y - half), 2 * half, 2 * half, boxstyle="round,pad=0,rounding_size=0.04", **style)
    if kind == "identity":
        return polygon((x, y), numVertices=4, radius=0.17, **style)
    if kind == "ones":
        return polygon((x, y - 0.03), numVertices=3, radius=0.19, **style)
    if kind == "scalar":
        return polygon((x, y), numVertices=6, radius=0.24, **style)
    if kind == "constant":
        return polygon((x, y), numVertices=8, radius=0.24, orientation=0.3927, **style)
    return polygon((x, y), numVertices=5, radius=0.2, **style)


def _end_label(
    ax: Axes, layout: Diagram, vertex: Vertex, text: str, box: dict, offset: tuple[float, float] | None = None
) -> None:
    x, y = layout.position(vertex.id)
    if offset is None:
        dx, dy = layout.outward(vertex.id)
        offset = (0.1 * dx, 0.1 * dy)
        ha = "left" if dx > 0.35 else "right" if dx < -0.35 else "center"
        va = "bottom" if dy > 0.35 else "top" if dy < -0.35 else "center"
    else:
        ha, va = "left", "bottom"
    ax.text(x + offset[0], y + offset[1], text, ha=ha, va=va, fontsize=8, bbox=box, zorder=3)


# ------------------------------------------------------------------------------------ DOT
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
    network = _network(network, simplified)
    layout = diagram(network)
    nodes = {node.name: node for node in network.nodes}
    lines = [
        "graph tnconv {",
        '  graph [overlap=false, splines=true, fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=11, style=filled, penwidth=1];',
        '  edge [fontname="Helvetica", fontsize=9, color="#444444"];',
    ]
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        pos = f'pos="{72 * x:.1f},{72 * y:.1f}"'
        if vertex.node is not None:
            node = nodes[vertex.node]
            _, fill, ink, _, shape, _ = _style(node.kind)
            attrs = f"label={_dot_string(node_label(node))}, shape={shape}, fillcolor={_dot_string(fill)}, "
            attrs += f"fontcolor={_dot_string(ink)}, {pos}"
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


# ----------------------------------------------------------------------------------- TikZ
_TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _tex_text(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(c, c) for c in text)


def _tex_name(name: str) -> str:
    """``i1`` → ``i_{1}``, ``ci'`` → ``\\mathrm{ci}'``; anything else as upright text."""
    match = _NAME.match(name)
    if not match:
        return rf"\text{{{_tex_text(name)}}}"
    letters, digits, primes = match.groups()
    base = letters if len(letters) == 1 else rf"\mathrm{{{letters}}}"
    return base + (f"_{{{digits}}}" if digits else "") + primes


def _tex_node(node: Node) -> str:
    if node.kind == "pattern":
        match = re.match(r"^pi(\d*)('*)$", node.name)
        return r"\Pi" + ((f"_{{{match.group(1)}}}" if match.group(1) else "") + match.group(2) if match else "")
    if node.kind == "identity":
        return r"\delta"
    if node.kind == "ones":
        return r"\mathbf{1}"
    if node.kind == "scalar":
        return rf"\times {scalar_text(node.value)}"
    if node.kind == "constant" and node.network is not None and node.network.nodes:
        return r"\Sigma " + _tex_node(node.network.nodes[0])
    if node.name.endswith("_dot") and _NAME.match(node.name[:-4]):
        return rf"\dot{{{_tex_name(node.name[:-4])}}}"
    return _tex_name(node.name)


def _tex_leg(network: TensorNetwork, leg: str, show_sizes: bool) -> str:
    return f"${_tex_name(leg)}{f' = {network.size(leg)}' if show_sizes else ''}$"


def to_latex(network: TensorNetwork, *, simplified: bool = False, show_sizes: bool = False) -> str:
    """The network as a TikZ picture (``\\begin{tikzpicture} … \\end{tikzpicture}``).

    Uses tnconv's layout; one ``\\node`` per vertex (network nodes, junction dots, open
    ends) and one ``\\draw`` per edge. Needs ``\\usepackage{tikz}`` and
    ``\\usetikzlibrary{shapes.geometric}`` in the preamble.

    >>> import tnconv
    >>> tikz = to_latex(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
    >>> tikz.splitlines()[0]
    '% needs \\\\usepackage{tikz} and \\\\usetikzlibrary{shapes.geometric}'
    """
    network = _network(network, simplified)
    layout = diagram(network)
    nodes = {node.name: node for node in network.nodes}
    ids = {vertex.id: f"v{i}" for i, vertex in enumerate(layout.vertices)}
    styles = [
        r"  every node/.style={font=\small},",
        r"  leg/.style={font=\scriptsize, fill=white, inner sep=1pt},",
        r"  junction/.style={circle, fill=black, inner sep=0pt, minimum size=3.5pt},",
        r"  summed/.style={circle, draw, fill=white, inner sep=0pt, minimum size=3.5pt},",
        r"  open/.style={font=\scriptsize, inner sep=1.5pt},",
    ]
    for kind, (_, fill, ink, _, _, shape) in (STYLES | {"other": _OTHER}).items():
        colour = fill.lstrip("#").upper()
        size = "6.5mm" if kind in ("input", "scalar") else "5.5mm" if kind == "pattern" else "4mm"
        styles.append(
            rf"  {kind}/.style={{{shape}, draw, fill={{rgb,255:red,{int(colour[:2], 16)};"
            rf"green,{int(colour[2:4], 16)};blue,{int(colour[4:], 16)}}}, text={ink}, "
            rf"minimum size={size}, inner sep=1pt}},"
        )
    lines = [
        r"% needs \usepackage{tikz} and \usetikzlibrary{shapes.geometric}",
        r"\begin{tikzpicture}[x=1.5cm, y=1.5cm,",
        *styles,
        "]",
    ]
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        at = f"({ids[vertex.id]}) at ({x:.3f}, {y:.3f})"
        if vertex.node is not None:
            node = nodes[vertex.node]
            kind = node.kind if node.kind in STYLES else "other"
            lines.append(rf"\node[{kind}] {at} {{${_tex_node(node)}$}};")
        elif vertex.kind == "open":
            lines.append(rf"\node[open] {at} {{{_tex_leg(network, vertex.leg, show_sizes)}}};")
        else:
            style = "junction" if vertex.kind == "junction" else "summed"
            label = ""
            if layout.label_vertex(vertex.leg) == vertex.id:
                label = f", label={{[leg]above right:{_tex_leg(network, vertex.leg, show_sizes)}}}"
            lines.append(rf"\node[{style}{label}] {at} {{}};")
    for index, edge in enumerate(layout.edges):
        bend = layout.bends[index]
        path = "--" if bend == 0 else f"to[bend {'left' if bend > 0 else 'right'}={_bend_degrees(bend):.0f}]"
        label = f" node[leg] {{{_tex_leg(network, edge.leg, show_sizes)}}}" if edge.labelled else ""
        lines.append(rf"\draw ({ids[edge.a]}) {path}{label} ({ids[edge.b]});")
    lines.append(r"\end{tikzpicture}")
    return "\n".join(lines) + "\n"


def _bend_degrees(bend: float) -> float:
    """TikZ's ``bend`` angle of a quadratic curve whose control point is ``bend`` chords off the middle."""
    import math

    return math.degrees(math.atan(2 * abs(bend)))
