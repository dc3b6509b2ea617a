"""The drawable graph of a tensor network: vertices, edges and where each leg is labelled.

Every node of the network is a vertex. A leg joins the places it touches: the nodes that
carry it and, for an output leg, an open end. Two places are joined by one edge; more
than two (a hyperedge, such as the batch leg ``n`` of a per-sample gradient) meet at a
``"junction"`` vertex with one edge to each. An output leg ends in an ``"open"`` vertex,
and a summed leg carried by a single node ends in a ``"sum"`` vertex. Each leg is labelled
exactly once: at its open end, else at its junction, else in the middle of its edge.

>>> import tnconv
>>> vertices, edges = graph(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
>>> [v.id for v in vertices if v.node is None]
['open:n', 'open:g', 'junction:g', 'open:o1', 'open:co']
"""

from __future__ import annotations

from dataclasses import dataclass

from ..simplify import simplify
from ..symbolic.network import TensorNetwork


@dataclass(frozen=True)
class Vertex:
    """A place in the diagram.

    Attributes:
        id: unique; a node's name, or ``"junction:<leg>"``, ``"open:<leg>"``, ``"sum:<leg>"``.
        kind: a node kind (``"input"``, ``"pattern"``, …) or ``"junction"``, ``"open"``, ``"sum"``.
        node: the network node's name, for node vertices.
        leg: the leg, for junction, open and sum vertices.
    """

    id: str
    kind: str
    node: str | None = None
    leg: str | None = None


@dataclass(frozen=True)
class Edge:
    """A line of the diagram: part of ``leg``, from vertex ``a`` to vertex ``b``.

    ``labelled`` tells whether the leg's label sits on this edge's middle.
    """

    leg: str
    a: str
    b: str
    labelled: bool


def network_to_draw(network: TensorNetwork, simplified: bool) -> TensorNetwork:
    """``network`` (checked to be one), or its simplification with ``simplified``; every renderer starts here."""
    if not isinstance(network, TensorNetwork):
        raise TypeError(f"network must be a tnconv.TensorNetwork, got {type(network).__name__}")
    return simplify(network) if simplified else network


def graph(network: TensorNetwork) -> tuple[tuple[Vertex, ...], tuple[Edge, ...]]:
    """The vertices and edges of a network's diagram (no positions)."""
    vertices = [Vertex(node.name, node.kind, node=node.name) for node in network.nodes]
    edges: list[Edge] = []
    carriers: dict[str, list[str]] = {}
    for node in network.nodes:
        for leg in node.legs:
            carriers.setdefault(leg, []).append(node.name)
    output = set(network.output_legs)
    for leg in network.legs:
        ends = list(carriers[leg])
        if leg in output:
            vertices.append(Vertex(f"open:{leg}", "open", leg=leg))
            ends.append(f"open:{leg}")
        elif len(ends) == 1:
            vertices.append(Vertex(f"sum:{leg}", "sum", leg=leg))
            ends.append(f"sum:{leg}")
        if len(ends) == 2:
            edges.append(Edge(leg, ends[0], ends[1], labelled=leg not in output and not ends[1].startswith("sum:")))
        else:
            junction = f"junction:{leg}"
            vertices.append(Vertex(junction, "junction", leg=leg))
            edges.extend(Edge(leg, junction, end, labelled=False) for end in ends)
    return tuple(vertices), tuple(edges)
