"""A deterministic layout of a network's diagram (:mod:`.graph`): positions and edge bends.

Positions come from stress majorization (distances in the graph become distances in the
plane), computed with torch in float64, so laying out needs no plotting library. Data
nodes are pinned on a ring in the order that keeps the most strongly tied pairs next to
each other, chains of patterns between two data nodes sit on the line between them, and
the rest is placed from several fixed starts, keeping the result with the fewest
crossings. The result is normalised (first data node on the left, first index pattern
above) and the edges are bent where a straight line would cross a node, another edge or
a label. The same network always gets the same layout, on every machine.

>>> import tnconv
>>> d = diagram(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
>>> sorted(e.b for e in d.edges if e.a == "junction:g")   # g joins x, w and the output
['open:g', 'w', 'x']
>>> len(d.positions) == len(d.vertices) and len(d.bends) == len(d.edges)
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..symbolic.network import TensorNetwork
from .graph import Edge, Vertex, graph

# The layout wants an edge as long as the sum of its ends' reaches, so that bulky data nodes
# sit further apart than a junction and its open end. An edge joining two data nodes directly
# counts as much longer: data nodes should be spread out with the patterns between them, and
# the direct edge is bent around whatever lies in between.
_REACH = {
    "input": 0.8,
    "pattern": 0.6,
    "constant": 0.6,
    "identity": 0.45,
    "ones": 0.45,
    "junction": 0.7,
    "open": 0.45,
    "sum": 0.2,
}
_DIRECT_DATA_LENGTH = 3.2
_STARTS = 5
_SPACING = 1.0
_NODE_GAP = 0.6
_GAP = 0.3
_BENDS = (0.0, 0.22, -0.22, 0.45, -0.45, 0.7, -0.7)
_SAMPLES = 17


@dataclass(frozen=True)
class Diagram:
    """A network's vertices, edges, positions and edge bends.

    Attributes:
        network: the network drawn.
        vertices, edges: the graph (see :mod:`tnconv.diagrams.graph`).
        positions: ``(x, y)`` of every vertex, in the order of ``vertices``; one unit is the
            length of an edge between two nodes.
        bends: one per edge: the control point of its quadratic Bézier curve lies
            ``bend · length`` to the left of the chord's middle (0 is straight).
    """

    network: TensorNetwork
    vertices: tuple[Vertex, ...]
    edges: tuple[Edge, ...]
    positions: tuple[tuple[float, float], ...]
    bends: tuple[float, ...]

    def position(self, vertex_id: str) -> tuple[float, float]:
        return self.positions[self._index[vertex_id]]

    def vertex(self, vertex_id: str) -> Vertex:
        return self.vertices[self._index[vertex_id]]

    @property
    def _index(self) -> dict[str, int]:
        return {v.id: i for i, v in enumerate(self.vertices)}

    def label_vertex(self, leg: str) -> str | None:
        """The vertex that carries ``leg``'s label, or ``None`` when an edge's middle does."""
        for prefix in ("open:", "junction:", "sum:"):
            vid = prefix + leg
            if vid in self._index:
                return vid
        return None

    def curve(self, edge_index: int) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """Start, control and end point of an edge's quadratic Bézier curve."""
        edge = self.edges[edge_index]
        return _control(self.position(edge.a), self.position(edge.b), self.bends[edge_index])

    def edge_middle(self, edge_index: int) -> tuple[float, float]:
        """The point half-way along an edge's curve (where its label goes)."""
        (x0, y0), (x1, y1), (x2, y2) = self.curve(edge_index)
        return (0.25 * x0 + 0.5 * x1 + 0.25 * x2, 0.25 * y0 + 0.5 * y1 + 0.25 * y2)

    def outward(self, vertex_id: str) -> tuple[float, float]:
        """Unit direction in which an open or sum vertex points away from what it ends."""
        for edge in self.edges:
            if vertex_id in (edge.a, edge.b):
                other = edge.a if edge.b == vertex_id else edge.b
                (x0, y0), (x1, y1) = self.position(other), self.position(vertex_id)
                norm = math.hypot(x1 - x0, y1 - y0) or 1.0
                return ((x1 - x0) / norm, (y1 - y0) / norm)
        return (0.0, 1.0)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)`` of the vertices."""
        xs = [p[0] for p in self.positions] or [0.0]
        ys = [p[1] for p in self.positions] or [0.0]
        return (min(xs), max(xs), min(ys), max(ys))


@lru_cache(maxsize=256)
def diagram(network: TensorNetwork) -> Diagram:
    """The laid-out diagram of ``network`` (cached; the same network always looks the same)."""
    vertices, edges = graph(network)
    with _one_thread():
        positions = _layout(vertices, edges)
        bends = _choose_bends(vertices, edges, positions)
    return Diagram(network, vertices, edges, tuple(map(tuple, positions.tolist())), bends)


# ------------------------------------------------------------------------------ layout
@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: the layout's tensors are tiny, and waking a thread pool for
    each of its many small operations costs far more than the arithmetic (ten times more
    on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the points of ``a [..., P, 2]`` and ``b [..., Q, 2]``.

    (Written out: for such tiny inputs ``torch.cdist`` costs more in threading than in arithmetic.)
    """
    return (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1).sqrt()


def _edge_length(a: Vertex, b: Vertex) -> float:
    if a.kind == b.kind == "input":
        return _DIRECT_DATA_LENGTH
    return _REACH.get(a.kind, 0.5) + _REACH.get(b.kind, 0.5)


def _layout(vertices: tuple[Vertex, ...], edges: tuple[Edge, ...]) -> torch.Tensor:
    """Positions ``[V, 2]``: data nodes on a ring, the rest by stress majorization, scalars above."""
    placed = [i for i, v in enumerate(vertices) if v.kind != "scalar"]
    positions = torch.zeros(len(vertices), 2, dtype=torch.float64)
    if placed:
        sub = [vertices[i] for i in placed]
        positions[placed] = _normalise(sub, _stress_layout(sub, edges))
    scalars = [i for i, v in enumerate(vertices) if v.kind == "scalar"]
    if scalars:
        top = positions[placed, 1].max().item() + 0.8 if placed else 0.0
        left = positions[placed, 0].min().item() if placed else 0.0
        for j, i in enumerate(scalars):
            positions[i] = torch.tensor([left + 0.7 * j, top], dtype=torch.float64)
    return positions


def _distances(vertices: list[Vertex], edges: tuple[Edge, ...]) -> torch.Tensor:
    """Shortest-path lengths (Floyd–Warshall); unreachable pairs get the longest path plus one."""
    index = {v.id: i for i, v in enumerate(vertices)}
    n = len(vertices)
    dist = torch.full((n, n), math.inf, dtype=torch.float64)
    dist.fill_diagonal_(0.0)
    for edge in edges:
        a, b = index[edge.a], index[edge.b]
        length = min(dist[a, b].item(), _edge_length(vertices[a], vertices[b]))
        dist[a, b] = dist[b, a] = length
    for k in range(n):
        dist = torch.minimum(dist, dist[:, k : k + 1] + dist[k : k + 1, :])
    finite = dist[torch.isfinite(dist)]
    return torch.where(torch.isfinite(dist), dist, finite.max() + 1.0)


def _ring_order(vertices: list[Vertex], edges: tuple[Edge, ...], data: list[int]) -> list[int]:
    """Data nodes in the ring order that puts the most strongly tied pairs next to each other.

    Two data nodes are tied by each edge between them and by each connected piece of
    non-data nodes and junctions that touches both (a piece touching ``s`` data nodes
    counts ``1/(s−1)`` for each of its pairs). The first data node stays first; ties go
    to the order of the network.
    """
    if len(data) <= 3:
        return data
    index = {v.id: i for i, v in enumerate(vertices)}
    is_data = {i: vertices[i].kind == "input" for i in range(len(vertices))}
    linking = {i for i, v in enumerate(vertices) if v.kind not in ("input", "open", "sum")}
    strength: dict[tuple[int, int], float] = {}
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(vertices))}
    for edge in edges:
        a, b = index[edge.a], index[edge.b]
        neighbours[a].add(b)
        neighbours[b].add(a)
        if is_data[a] and is_data[b]:
            strength[(a, b)] = strength.get((a, b), 0.0) + 1.0
            strength[(b, a)] = strength[(a, b)]
    seen: set[int] = set()
    for start in sorted(linking):
        if start in seen:
            continue
        piece, stack = {start}, [start]
        while stack:
            for other in neighbours[stack.pop()] & linking - piece:
                piece.add(other)
                stack.append(other)
        seen |= piece
        touched = sorted({d for v in piece for d in neighbours[v] if is_data[d]})
        for a, b in itertools.combinations(touched, 2):
            share = 1.0 / (len(touched) - 1)
            strength[(a, b)] = strength.get((a, b), 0.0) + share
            strength[(b, a)] = strength[(a, b)]
    if len(data) > 8:  # too many orders to try: keep the network's
        return data
    best, best_tie = data, -math.inf
    for rest in itertools.permutations(data[1:]):
        order = [data[0], *rest]
        tie = sum(strength.get((order[j - 1], order[j]), 0.0) for j in range(len(order)))
        if tie > best_tie + 1e-9:
            best, best_tie = order, tie
    return best


def _stress_layout(vertices: list[Vertex], edges: tuple[Edge, ...]) -> torch.Tensor:
    """Data nodes pinned on a ring (two: left and right); the other vertices placed by stress
    majorization from several fixed starts, keeping the result with the fewest crossings."""
    n = len(vertices)
    if n == 1:
        return torch.zeros(1, 2, dtype=torch.float64)
    target = _distances(vertices, edges)
    data = [i for i, v in enumerate(vertices) if v.kind == "input"]
    index = {v.id: i for i, v in enumerate(vertices)}
    pairs = [(index[e.a], index[e.b]) for e in edges if e.a in index and e.b in index]
    pinned = _ring_order(vertices, edges, data) if len(data) >= 2 else []
    longest = max((len(p) for pieces in _chains(vertices, pairs).values() for p in pieces), default=0)
    ring = _ring(target, pinned, minimum=max(2.4, 1.3 * (longest + 1)))
    between, places = _between(vertices, pairs, pinned, ring)
    pinned, ring = pinned + between, torch.cat((ring, places))
    free = [i for i in range(n) if i not in pinned]
    off = ~torch.eye(n, dtype=torch.bool)
    weights = torch.where(off, target.clamp(min=1e-9).pow(-2), torch.zeros((), dtype=torch.float64))
    starts = torch.stack([_tutte(n, pairs, pinned, ring), *_starts(target, pinned, ring)])
    layouts = _separate(_smacof(starts, target, weights, pinned, free), vertices, free)
    stresses = (weights * (_pairwise(layouts, layouts) - target).square()).sum((1, 2)) / 2
    scores = [_crossings(x, pairs) + stress / (n * n) for x, stress in zip(layouts, stresses.tolist())]
    return layouts[scores.index(min(scores))]  # the first of equals


def _chains(vertices: list[Vertex], pairs: list[tuple[int, int]]) -> dict[frozenset[int], list[set[int]]]:
    """Connected pieces of non-data nodes (junctions and open ends excluded), grouped by the
    data nodes they touch; only pieces touching two or more data nodes are kept."""
    data = {i for i, v in enumerate(vertices) if v.kind == "input"}
    members = {i for i, v in enumerate(vertices) if v.node is not None and v.kind != "input"}
    neighbours = _neighbours(len(vertices), pairs)
    groups: dict[frozenset[int], list[set[int]]] = {}
    seen: set[int] = set()
    for start in sorted(members):
        if start in seen:
            continue
        piece, stack = {start}, [start]
        while stack:
            for other in neighbours[stack.pop()] & members - piece:
                piece.add(other)
                stack.append(other)
        seen |= piece
        touched = frozenset(d for v in piece for d in neighbours[v] if d in data)
        if len(touched) >= 2:
            groups.setdefault(touched, []).append(piece)
    return groups


def _neighbours(n: int, pairs: list[tuple[int, int]]) -> dict[int, set[int]]:
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)
    return neighbours


def _between(
    vertices: list[Vertex], pairs: list[tuple[int, int]], ring_order: list[int], ring: torch.Tensor
) -> tuple[list[int], torch.Tensor]:
    """Place the chains (:func:`_chains`) that lead from one data node to another along the
    line between the two, and chains joining the same two data nodes side by side across
    it (the first on the left of the line). Each node goes as far along the line as its
    number of steps from the first data node makes it. Chains touching more than two data
    nodes are left to the stress layout."""
    place = {d: ring[j] for j, d in enumerate(ring_order)}
    neighbours = _neighbours(len(vertices), pairs)
    chosen: list[int] = []
    places: list[torch.Tensor] = []
    for touched, pieces in _chains(vertices, pairs).items():
        if len(touched) != 2:
            continue
        first_end, second_end = sorted(touched, key=ring_order.index)
        start, direction = place[first_end], place[second_end] - place[first_end]
        across = torch.stack((-direction[1], direction[0])) / direction.norm()
        for j, piece in enumerate(pieces):
            offset = (0.5 * (len(pieces) - 1) - j) * _SPACING * across
            first = _steps(piece, first_end, neighbours)
            second = _steps(piece, second_end, neighbours)
            for node in sorted(piece):
                chosen.append(node)
                places.append(start + first[node] / (first[node] + second[node]) * direction + offset)
    return chosen, torch.stack(places) if places else torch.zeros(0, 2, dtype=torch.float64)


def _steps(piece: set[int], source: int, neighbours: dict[int, set[int]]) -> dict[int, int]:
    """Number of steps from ``source`` to each node of ``piece``, moving inside the piece."""
    steps, frontier = {}, [source]
    depth = 0
    while frontier:
        depth += 1
        frontier = [v for u in frontier for v in sorted(neighbours[u] & piece) if v not in steps]
        for v in frontier:
            steps.setdefault(v, depth)
    return steps


def _tutte(n: int, pairs: list[tuple[int, int]], pinned: list[int], ring: torch.Tensor) -> torch.Tensor:
    """Every free vertex at the mean of its neighbours (pinned vertices on the ring), plus a
    fixed twist so that vertices with the same neighbours separate."""
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    for a, b in pairs:
        adjacency[a, b] = adjacency[b, a] = 1.0
    degree = adjacency.sum(1, keepdim=True).clamp(min=1.0)
    angle = torch.arange(n, dtype=torch.float64) * 2.399963
    x = 0.3 * torch.stack((angle.cos(), angle.sin()), 1)
    twist = x.clone()
    x[pinned] = ring
    for _ in range(100):
        x = adjacency @ x / degree + 0.05 * twist
        x[pinned] = ring
    return x


def _ring(target: torch.Tensor, pinned: list[int], minimum: float) -> torch.Tensor:
    """Positions of the pinned data nodes: a regular polygon starting on the left, going down,
    with sides as long as the typical distance between ring neighbours."""
    k = len(pinned)
    if k == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    sides = sorted(target[pinned[j - 1], pinned[j]].item() for j in range(k))
    side = max(minimum, sides[k // 2])
    radius = side / (2 * math.sin(math.pi / k))
    first = math.pi if k == 2 else math.pi - math.pi / k
    angles = [first + 2 * math.pi * j / k for j in range(k)]
    return torch.tensor([[radius * math.cos(a), radius * math.sin(a)] for a in angles], dtype=torch.float64)


def _starts(target: torch.Tensor, pinned: list[int], ring: torch.Tensor) -> list[torch.Tensor]:
    """Classical MDS, then seeded random positions (the same every run, on every machine);
    pinned vertices sit on their ring positions in every start."""
    n = target.shape[0]
    centring = torch.eye(n, dtype=torch.float64) - 1.0 / n
    values, vectors = torch.linalg.eigh(-0.5 * centring @ target.square() @ centring)
    mds = vectors[:, -2:].flip(1) * values[-2:].flip(0).clamp(min=1e-6).sqrt()
    angle = torch.arange(n, dtype=torch.float64) * 2.399963  # a fixed twist separates symmetric vertices
    starts = [mds + 0.05 * torch.stack((angle.cos(), angle.sin()), 1)]
    scale = target.max().item() / 2
    for seed in range(_STARTS - 1):
        generator = torch.Generator().manual_seed(seed)
        starts.append(scale * (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5))
    for start in starts:
        start[pinned] = ring
    return starts


def _smacof(
    starts: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    pinned: list[int],
    free: list[int],
    iterations: int = 150,
) -> torch.Tensor:
    """Stress majorization (Guttman transforms) of a batch of starts ``[S, V, 2]``, moving
    only the ``free`` vertices."""
    laplacian = torch.diag(weights.sum(1)) - weights
    inverse = torch.linalg.pinv(laplacian[free][:, free])
    fixed = laplacian[free][:, pinned] @ starts[0, pinned] if pinned else 0.0
    pull = weights * target
    x = starts.clone()
    for _ in range(iterations):
        current = _pairwise(x, x)
        ratio = torch.where(current > 1e-12, pull / current.clamp(min=1e-12), 0.0)
        pulled = (ratio.sum(-1, keepdim=True) * x - ratio @ x)[:, free]
        update = inverse @ (pulled - fixed)
        done = (update - x[:, free]).abs().max() < 1e-4
        x[:, free] = update
        if done:
            break
    return x


def _separate(x: torch.Tensor, vertices: list[Vertex], free: list[int], rounds: int = 60) -> torch.Tensor:
    """Push the ``free`` vertices of a batch of layouts ``[S, V, 2]`` apart until no two
    shapes overlap: nodes keep ``_NODE_GAP`` between centres, other vertices ``_GAP``."""
    n = len(vertices)
    is_node = torch.tensor([v.node is not None for v in vertices])
    gap = torch.where(is_node.view(-1, 1) & is_node.view(1, -1), _NODE_GAP, _GAP).to(torch.float64)
    gap.fill_diagonal_(0.0)
    movable = torch.zeros(n, dtype=torch.float64)
    movable[free] = 1.0
    # A pair moves apart by its overlap: shared when both may move, else all on the free one.
    share = movable.view(1, -1) / (movable.view(1, -1) + movable.view(-1, 1)).clamp(min=1.0)
    angle = torch.arange(n * n, dtype=torch.float64).view(n, n) * 2.399963  # for coinciding points
    fallback = torch.stack((angle.cos(), angle.sin()), -1)
    fallback = fallback - fallback.transpose(0, 1)
    x = x.clone()
    for _ in range(rounds):
        delta = x.unsqueeze(2) - x.unsqueeze(1)  # [S, V, V, 2]: from j to i
        distance = delta.norm(dim=-1, keepdim=True)
        direction = torch.where(distance > 1e-9, delta / distance.clamp(min=1e-9), fallback)
        overlap = (gap - distance.squeeze(-1)).clamp(min=0)
        if overlap.max() < 1e-6:
            break
        x = x + ((overlap * share.transpose(0, 1)).unsqueeze(-1) * direction).sum(2) * 1.05
    return x


def _crossings(x: torch.Tensor, pairs: list[tuple[int, int]]) -> int:
    """How many pairs of straight edges (without a common end) cross."""
    count = 0
    p = x.tolist()
    for i, (a, b) in enumerate(pairs):
        for c, d in pairs[i + 1 :]:
            if len({a, b, c, d}) == 4 and _segments_cross(p[a], p[b], p[c], p[d]):
                count += 1
    return count


def _segments_cross(p: list[float], q: list[float], r: list[float], s: list[float]) -> bool:
    def side(a: list[float], b: list[float], c: list[float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def _normalise(vertices: list[Vertex], x: torch.Tensor) -> torch.Tensor:
    """Centre; without a ring, turn the data node to the left; put the first index pattern above."""
    data = [i for i, v in enumerate(vertices) if v.kind == "input"]
    first = data[0] if data else 0
    if len(data) < 2:
        direction = x.mean(0) - x[first]
        if direction.norm() > 1e-9:
            c, s = (direction / direction.norm()).tolist()
            x = x @ torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # the direction becomes +x
    if len(data) <= 2:
        patterns = [i for i, v in enumerate(vertices) if v.kind == "pattern"]
        others = patterns or [i for i, v in enumerate(vertices) if v.kind not in ("input", "open")]
        if others and x[others[0], 1] < x[first, 1] - 1e-9:
            x = x * torch.tensor([1.0, -1.0], dtype=torch.float64)
    return x - (x.amax(0) + x.amin(0)) / 2


# ------------------------------------------------------------------------------- bends
def _control(
    a: tuple[float, float], b: tuple[float, float], bend: float
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    (x0, y0), (x2, y2) = a, b
    dx, dy = x2 - x0, y2 - y0
    return (a, (0.5 * (x0 + x2) - bend * dy, 0.5 * (y0 + y2) + bend * dx), b)


def _samples(a: torch.Tensor, b: torch.Tensor, bends: torch.Tensor) -> torch.Tensor:
    """``[E, len(bends), _SAMPLES, 2]`` points of the curves from ``a [E, 2]`` to ``b [E, 2]``,
    ends excluded (they sit inside the vertices)."""
    d = (b - a).unsqueeze(1)
    normal = torch.stack((-d[..., 1], d[..., 0]), -1)
    control = (0.5 * (a + b)).unsqueeze(1) + bends.view(1, -1, 1) * normal  # [E, C, 2]
    t = torch.linspace(0.1, 0.9, _SAMPLES, dtype=torch.float64).view(1, 1, -1, 1)
    start, end = a.view(-1, 1, 1, 2), b.view(-1, 1, 1, 2)
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control.unsqueeze(2) + t**2 * end


def _clearance(vertex: Vertex) -> float:
    return {"junction": 0.12, "open": 0.18, "sum": 0.12}.get(vertex.kind, 0.3)


def _choose_bends(vertices: tuple[Vertex, ...], edges: tuple[Edge, ...], positions: torch.Tensor) -> tuple[float, ...]:
    """Bend each edge (in order) as little as possible while keeping clear of vertices, of
    edges already drawn and of their labels. Edges to open ends stay straight."""
    if not edges:
        return ()
    index = {v.id: i for i, v in enumerate(vertices)}
    ends = torch.tensor([[index[e.a], index[e.b]] for e in edges])
    candidates = torch.tensor(_BENDS, dtype=torch.float64)
    points = _samples(positions[ends[:, 0]], positions[ends[:, 1]], candidates)  # [E, C, S, 2]
    # Cost of passing near a vertex other than the edge's own ends, for every edge and bend at once.
    clearance = torch.tensor([_clearance(v) for v in vertices], dtype=torch.float64)
    intrusion = (clearance - _pairwise(points, positions.view(1, 1, -1, 2))).clamp(min=0)  # [E, C, S, V]
    own = torch.zeros(len(edges), len(vertices), dtype=torch.bool)
    own[torch.arange(len(edges)), ends[:, 0]] = True
    own[torch.arange(len(edges)), ends[:, 1]] = True
    intrusion = intrusion.masked_fill(own.view(len(edges), 1, 1, -1), 0.0)
    costs = 0.4 * candidates.abs() + 10.0 * intrusion.sum(3).amax(2)  # [E, C]
    # Near its own ends an edge meets the other edges of those vertices anyway: only the
    # stretch outside the node shapes counts as overlapping.
    from_ends = _pairwise(points, positions[ends].view(len(edges), 1, 2, 2)).amin(3)  # [E, C, S]
    outside = from_ends > 0.3
    middle = _SAMPLES // 2
    drawn = torch.zeros(0, 2, dtype=torch.float64)
    labels = torch.zeros(0, 2, dtype=torch.float64)
    bends: list[float] = []
    for e, edge in enumerate(edges):
        if "open" in (vertices[ends[e, 0]].kind, vertices[ends[e, 1]].kind):
            best = 0
        else:
            cost = costs[e]
            if len(drawn):
                overlap = (0.12 - _pairwise(points[e], drawn).amin(2)).clamp(min=0)
                cost = cost + 2.0 * (overlap * outside[e]).sum(1)
            if edge.labelled and len(labels):
                gap = _pairwise(points[e, :, middle], labels)
                cost = cost + 10.0 * (0.35 - gap).clamp(min=0).sum(1)
            best = int(torch.argmin(cost))  # the first minimum: the least bent of equals
        drawn = torch.cat((drawn, points[e, best][outside[e, best]]))
        if edge.labelled:
            labels = torch.cat((labels, points[e, best, middle : middle + 1]))
        bends.append(_BENDS[best])
    return tuple(bends)
