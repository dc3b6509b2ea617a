"""Diagrams as matplotlib pictures (:func:`draw`), saved as PNG, SVG or PDF.

matplotlib is optional (``pip install tnconv[plot]``): it is imported only when
:func:`draw` runs, and a missing one raises an ``ImportError`` that says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..symbolic.network import TensorNetwork
from .graph import Vertex, network_to_draw
from .labels import leg_label, node_label
from .layout import Diagram, diagram
from .style import EDGE_COLOUR, STYLES, style_key, style_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
"""File formats :func:`draw` writes, chosen by the path's extension."""

_LEGEND_ORDER = (*STYLES, "other", "junction", "sum")


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
    network = network_to_draw(network, simplified)
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
        ax.add_patch(PathPatch(path, facecolor="none", edgecolor=EDGE_COLOUR, linewidth=1.3, zorder=1))
        if edge.labelled:
            x, y = layout.edge_middle(index)
            text = leg_label(network, edge.leg, show_sizes)
            ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox=box, zorder=3)
    kinds_seen: dict[str, None] = {}
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        if vertex.node is not None:
            node = nodes[vertex.node]
            kinds_seen.setdefault(style_key(node.kind))
            style = style_of(node.kind)
            ax.add_patch(_node_patch(node.kind, x, y, style.fill, Circle, FancyBboxPatch, RegularPolygon))
            text = node_label(node)
            size = 9 if len(text) <= 4 else max(5.5, 9 * 4 / len(text))
            ax.text(x, y, text, ha="center", va="center", fontsize=size, color=style.text_colour, zorder=5)
        elif vertex.kind == "junction":
            kinds_seen.setdefault("junction")
            ax.add_patch(Circle((x, y), 0.055, facecolor="black", edgecolor="none", zorder=4))
            if layout.label_vertex(vertex.leg) == vertex.id:
                _end_label(ax, layout, vertex, leg_label(network, vertex.leg, show_sizes), box, offset=(0.1, 0.1))
        elif vertex.kind == "open":
            _end_label(ax, layout, vertex, leg_label(network, vertex.leg, show_sizes), box)
        elif vertex.kind == "sum":
            kinds_seen.setdefault("sum")
            ax.add_patch(Circle((x, y), 0.05, facecolor="white", edgecolor=EDGE_COLOUR, linewidth=1.2, zorder=4))
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
                    color=EDGE_COLOUR,
                    markerfacecolor="white",
                    linestyle="",
                    markersize=5,
                    label="summed leg",
                )  # fmt: skip
            )
        else:
            style = style_of(kind)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker=style.marker,
                    color=style.fill,
                    markeredgecolor=EDGE_COLOUR,
                    linestyle="",
                    markersize=8,
                    label=style.description,
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
    style = {"facecolor": fill, "edgecolor": EDGE_COLOUR, "linewidth": 1.0, "zorder": 4}
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
