"""Symbolic tensor networks (docs/reference.md §4).

A :class:`TensorNetwork` is a set of :class:`Node` s connected by named legs, each leg with
a size, plus the legs that stay open (the output). Nothing in this module touches data:
networks are immutable and hashable, so everything derived from them (equations,
contraction plans, simplified forms) is cached. Tensors enter only in
:meth:`TensorNetwork.contract`.

A node's tensor dimensions are *axes*; each axis is a tuple of one or more legs, merged
row-major. ``x`` of a grouped convolution has axes ``(n,), (g, ci), (i1,), …``: the user
passes the ``[N, C_in, I…]`` tensor and the network sees the legs ``n, g, ci, i1, …``.

Example:
    >>> import torch, tnconv
    >>> tn = tnconv.networks.conv((2, 3, 8), (4, 3, 3))
    >>> tn.equation()
    'abcd,def,bgcf->abge'
    >>> x, w = torch.randn(2, 3, 8), torch.randn(4, 3, 3)
    >>> torch.allclose(tn.contract(x=x, w=w), torch.nn.functional.conv1d(x, w), atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ..spec.pattern import IndexPattern

if TYPE_CHECKING:
    import torch

NodeKind = Literal["input", "pattern", "identity", "ones", "scalar", "constant"]
NODE_KINDS = ("input", "pattern", "identity", "ones", "scalar", "constant")
Axes = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Node:
    """One tensor of a network.

    Attributes:
        name: unique within the network; the keyword under which ``contract`` expects an
            ``"input"`` node's tensor.
        kind: ``"input"`` (user data), ``"pattern"`` (an index pattern Π with axes
            ``(i,), (o,), (k,)``), ``"identity"`` (Kronecker delta of two legs), ``"ones"``
            (all-ones vector) or ``"scalar"`` (a constant factor ``value``, no axes).
        axes: one tuple of legs per tensor dimension.
        pattern: the :class:`IndexPattern` of a ``"pattern"`` node.
        value: the constant of a ``"scalar"`` node.
        network: the data-independent sub-network of a ``"constant"`` node; its output legs
            are the node's legs.
        source: for an ``"input"`` node that reads another node's tensor (the two copies of
            ``x`` in ``x·x``, e.g. in KFC), the keyword of that tensor; ``None``: its own name.
    """

    name: str
    kind: NodeKind
    axes: Axes
    pattern: IndexPattern | None = None
    value: float = 1.0
    network: TensorNetwork | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise ValueError(f"node kind must be one of {NODE_KINDS}, got {self.kind!r}")
        if self.kind == "pattern" and (self.pattern is None or len(self.axes) != 3):
            raise ValueError(f"pattern node {self.name!r} needs an IndexPattern and three axes (i, o, k)")
        if self.kind == "identity" and len(self.legs) != 2:
            raise ValueError(f"identity node {self.name!r} needs exactly two legs, got {self.legs}")
        if self.kind == "constant" and (self.network is None or self.network.output != self.axes):
            raise ValueError(f"constant node {self.name!r} needs a network whose output axes are {self.axes}")
        if self.kind == "scalar" and self.axes:
            raise ValueError(f"scalar node {self.name!r} has no axes, got {self.axes}")
        if len(set(self.legs)) != len(self.legs):
            raise ValueError(f"node {self.name!r} carries a leg twice: {self.legs}")
        if self.source is not None and self.kind != "input":
            raise ValueError(f"only input nodes read a source tensor, {self.name!r} is a {self.kind}")

    @property
    def legs(self) -> tuple[str, ...]:
        return tuple(leg for axis in self.axes for leg in axis)

    @property
    def key(self) -> str:
        """The keyword under which :meth:`TensorNetwork.contract` expects this node's tensor."""
        return self.source if self.source is not None else self.name

    @property
    def is_data(self) -> bool:
        """Whether the node holds user data (as opposed to a data-independent constant)."""
        return self.kind == "input"

    def renamed(self, mapping: Mapping[str, str]) -> Node:
        axes = tuple(tuple(mapping.get(leg, leg) for leg in axis) for axis in self.axes)
        if self.kind != "constant" or self.network is None:
            return replace(self, axes=axes)
        # a constant's open legs are its sub-network's output legs: rename them there too,
        # first moving the sub-network's summed legs out of the way of the new names
        sub, own = self.network, set(self.legs)
        targets = {mapping.get(leg, leg) for leg in own}
        taken = set(sub.legs) | targets
        inner: dict[str, str] = {}
        for leg in sub.legs:
            if leg not in own and leg in targets:
                inner[leg] = _fresh(leg, taken)
                taken.add(inner[leg])
        inner.update({leg: mapping[leg] for leg in own if leg in mapping})
        return replace(self, axes=axes, network=sub.rename(inner))


#: Operations that layers above this one provide to networks (``"contract"`` from
#: :mod:`tnconv.execute`, ``"simplify"`` from :mod:`tnconv.simplify`, ``"to_dot"`` and
#: ``"to_latex"`` from :mod:`tnconv.diagrams`). They register themselves on import, so the
#: methods of :class:`TensorNetwork` reach them while imports still flow one way.
EXTENSIONS: dict[str, Callable[..., Any]] = {}


def register_extension(name: str, function: Callable[..., Any]) -> None:
    """Provide the implementation behind ``TensorNetwork.<name>`` (called by the layers above)."""
    EXTENSIONS[name] = function


def _extension(name: str) -> Callable[..., Any]:
    try:
        return EXTENSIONS[name]
    except KeyError:
        raise RuntimeError(f"TensorNetwork.{name} needs the rest of tnconv: `import tnconv` first") from None


def _axis_text(axis: tuple[str, ...]) -> str:
    """``n`` for one leg, ``(g co)`` for merged legs, ``1`` for an axis whose legs were squeezed."""
    return axis[0] if len(axis) == 1 else f"({' '.join(axis)})" if axis else "1"


def _fresh(leg: str, taken: set[str]) -> str:
    new = leg + "'"
    while new in taken:
        new += "'"
    return new


@dataclass(frozen=True)
class TensorNetwork:
    """An immutable tensor network.

    Attributes:
        nodes: the tensors.
        sizes: ``(leg, size)`` pairs: the full range of every leg.
        output: the open legs, grouped into the result's dimensions like a node's axes.
        slices: ``(leg, kept)`` pairs: legs restricted to the positions ``kept`` of their full
            range (see :meth:`slice`); every node carrying the leg is sliced.
    """

    nodes: tuple[Node, ...]
    sizes: tuple[tuple[str, int], ...]
    output: Axes
    slices: tuple[tuple[str, tuple[int, ...]], ...] = ()
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = dict(self.sizes)
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        used = {leg for node in self.nodes for leg in node.legs}
        for leg in used:
            if leg not in sizes:
                raise ValueError(f"leg {leg!r} has no size")
        out = [leg for axis in self.output for leg in axis]
        if len(set(out)) != len(out):
            raise ValueError(f"output legs must be distinct, got {out}")
        missing = [leg for leg in out if leg not in used]
        if missing:
            raise ValueError(f"output legs {missing} are carried by no node")
        for node in self.nodes:
            if node.kind == "pattern":
                want = node.pattern.shape  # type: ignore[union-attr]
                have = tuple(sizes[leg] for leg in node.legs)
                if want != have:
                    raise ValueError(f"pattern node {node.name!r} has shape {want} but its legs have sizes {have}")
            if node.kind == "identity":
                a, b = node.legs
                if sizes[a] != sizes[b]:
                    raise ValueError(f"identity node {node.name!r} joins legs of sizes {sizes[a]} and {sizes[b]}")
        shapes: dict[str, tuple[int, ...]] = {}
        for node in self.nodes:
            if node.kind == "input":
                shape = tuple(math.prod(sizes[leg] for leg in axis) for axis in node.axes)
                if shapes.setdefault(node.key, shape) != shape:
                    raise ValueError(
                        f"nodes reading tensor {node.key!r} disagree on its shape: {shapes[node.key]} and {shape}"
                    )
        object.__setattr__(self, "_hash", hash((self.nodes, self.sizes, self.output, self.slices)))

    def __hash__(self) -> int:
        return self._hash

    # ----------------------------------------------------------------- queries
    @property
    def size_of(self) -> dict[str, int]:
        """Full size of every leg."""
        return dict(self.sizes)

    @cached_property
    def _contracted_sizes(self) -> dict[str, int]:
        sizes = dict(self.sizes)
        sizes.update((leg, len(kept)) for leg, kept in self.slices)
        return sizes

    def size(self, leg: str) -> int:
        """The size of ``leg`` as contracted (after slicing)."""
        return self._contracted_sizes[leg]

    @property
    def legs(self) -> tuple[str, ...]:
        """Every leg, in order of first appearance among the nodes."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            for leg in node.legs:
                seen.setdefault(leg)
        return tuple(seen)

    @property
    def output_legs(self) -> tuple[str, ...]:
        return tuple(leg for axis in self.output for leg in axis)

    @cached_property
    def inputs(self) -> tuple[str, ...]:
        """The keywords of :meth:`contract`: the data nodes' names (a tensor read by several
        nodes, see :attr:`Node.source`, is listed once)."""
        return tuple(dict.fromkeys(node.key for node in self.nodes if node.kind == "input"))

    @cached_property
    def input_shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``(name, shape)`` of every input, in :attr:`inputs` order (see :meth:`input_shape`)."""
        return tuple((name, self.input_shape(name)) for name in self.inputs)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ValueError(f"network has no node {name!r}; nodes are {[n.name for n in self.nodes]}")

    def input_shape(self, name: str) -> tuple[int, ...]:
        """The shape ``contract`` expects for input ``name`` (full, unsliced leg sizes)."""
        sizes = dict(self.sizes)
        node = next((n for n in self.nodes if n.kind == "input" and n.key == name), None) or self.node(name)
        return tuple(math.prod(sizes[leg] for leg in axis) for axis in node.axes)

    @cached_property
    def output_shape(self) -> tuple[int, ...]:
        sizes = self._contracted_sizes
        return tuple(math.prod(sizes[leg] for leg in axis) for axis in self.output)

    def symbols(self) -> dict[str, str]:
        """The einsum letter of every leg (``a``–``z``, ``A``–``Z``, then further Unicode)."""
        from opt_einsum import get_symbol

        return {leg: get_symbol(i) for i, leg in enumerate(self.legs)}

    def equation(self) -> str:
        """The einsum equation over the non-scalar nodes, in node order, e.g. ``'ab,bc->ac'``."""
        symbol = self.symbols()
        terms = ["".join(symbol[leg] for leg in node.legs) for node in self.nodes if node.kind != "scalar"]
        return ",".join(terms) + "->" + "".join(symbol[leg] for leg in self.output_legs)

    def __str__(self) -> str:
        lines = [f"TensorNetwork: {self.equation()}"]
        symbol = self.symbols()
        for node in self.nodes:
            desc = ", ".join(_axis_text(axis) for axis in node.axes)
            extra = (
                f" {node.pattern}"
                if node.pattern is not None
                else (f" = {node.value}" if node.kind == "scalar" else "")
            )
            if node.source is not None:
                extra += f" reads {node.source}"
            lines.append(f"  {node.name:<10} {node.kind:<8} [{desc}]{extra}")
        legs = ", ".join(f"{leg}={self.size(leg)}({symbol[leg]})" for leg in self.legs)
        lines.append(f"  legs: {legs}")
        out = ", ".join(_axis_text(axis) for axis in self.output)
        lines.append(f"  output: [{out}]")
        return "\n".join(lines)

    # --------------------------------------------------------- transformations
    def rename(self, mapping: Mapping[str, str]) -> TensorNetwork:
        """Rename legs (``{old: new}``); nodes keep their names."""

        def ren(leg: str) -> str:
            return mapping.get(leg, leg)

        return TensorNetwork(
            nodes=tuple(node.renamed(mapping) for node in self.nodes),
            sizes=tuple({ren(leg): size for leg, size in self.sizes}.items()),
            output=tuple(tuple(ren(leg) for leg in axis) for axis in self.output),
            slices=tuple((ren(leg), kept) for leg, kept in self.slices),
        )

    def with_nodes(
        self, nodes: Iterable[Node], output: Axes | None = None, extra_sizes: Mapping[str, int] | None = None
    ) -> TensorNetwork:
        """A copy with other nodes (and optionally another output and new legs)."""
        sizes = dict(self.sizes)
        sizes.update(extra_sizes or {})
        nodes = tuple(nodes)
        used = {leg for node in nodes for leg in node.legs}
        return TensorNetwork(
            nodes=nodes,
            sizes=tuple((leg, s) for leg, s in sizes.items() if leg in used),
            output=self.output if output is None else output,
            slices=tuple((leg, kept) for leg, kept in self.slices if leg in used),
        )

    def differentiate(self, name: str) -> TensorNetwork:
        """The Jacobian w.r.t. input ``name``: remove the node; its legs become free.

        The result's output is the original output followed by the removed node's axes.
        A leg of the removed node that is also an output leg (``n`` when differentiating
        w.r.t. ``x``) is renamed with a prime and tied to the original by an identity node;
        a leg carried by no other node gets an all-ones node. A sliced leg is freed the same
        way, as a full-range primed leg: the identity, sliced on one side only, selects the
        kept positions, so the Jacobian has the input's full shape (zero where not kept).
        """
        removed = self.node(name)
        if removed.kind != "input":
            raise ValueError(f"can only differentiate w.r.t. an input node, {name!r} is a {removed.kind}")
        rest = [node for node in self.nodes if node.name != name]
        taken = set(self.legs) | {n.name for n in self.nodes}
        out_legs = set(self.output_legs)
        carried = {leg for node in rest for leg in node.legs}
        sizes = dict(self.sizes)
        slices = dict(self.slices)
        mapping: dict[str, str] = {}
        for leg in removed.legs:
            if leg in out_legs or leg in slices:
                new = _fresh(leg, taken)
                taken.add(new)
                mapping[leg] = new
                sizes[new] = sizes[leg]
                rest.append(Node(f"delta_{leg}", "identity", ((leg,), (new,))))
            elif leg not in carried:
                rest.append(Node(f"ones_{leg}", "ones", ((leg,),)))
        free = removed.renamed(mapping).axes
        used = {leg for node in rest for leg in node.legs}
        return TensorNetwork(
            nodes=tuple(rest),
            sizes=tuple((leg, s) for leg, s in sizes.items() if leg in used),
            output=self.output + free,
            slices=tuple((leg, kept) for leg, kept in slices.items() if leg in used),
        )

    def vjp(self, wrt: str, vector: str = "v", batch: int | None = None, batch_leg: str = "m") -> TensorNetwork:
        """Vector-Jacobian product w.r.t. input ``wrt``.

        The Jacobian (:meth:`differentiate`) is contracted with a new input node ``vector``
        shaped like this network's output. With ``batch`` (an int), ``vector`` carries an
        extra leading leg ``batch_leg`` of that size and so does the result: a
        matrix-Jacobian product in one contraction.
        """
        jacobian = self.differentiate(wrt)
        n_out = len(self.output)
        lead: Axes = ((batch_leg,),) if batch is not None else ()
        if batch is not None and batch_leg in dict(jacobian.sizes):
            raise ValueError(f"batch_leg {batch_leg!r} already names a leg of the network")
        nodes = jacobian.nodes + (Node(vector, "input", lead + self.output),)
        extra = {batch_leg: batch} if batch is not None else {}
        return jacobian.with_nodes(nodes, output=lead + jacobian.output[n_out:], extra_sizes=extra)

    def jvp(
        self, wrt: str, tangent: str | None = None, batch: int | None = None, batch_leg: str = "m"
    ) -> TensorNetwork:
        """Jacobian-vector product w.r.t. ``wrt``: the node is replaced by a tangent input
        (named ``tangent``, default ``wrt + "_dot"``) of the same shape — the network is linear.

        With ``batch`` (an int), the tangent carries an extra leading leg ``batch_leg`` of that
        size and so does the result: many JVPs in one contraction.
        """
        self.node(wrt)
        tangent = tangent or f"{wrt}_dot"
        if batch is None:
            return self.with_nodes(
                replace(node, name=tangent, source=None) if node.name == wrt else node for node in self.nodes
            )
        if batch_leg in dict(self.sizes):
            raise ValueError(f"batch_leg {batch_leg!r} already names a leg of the network")
        lead: Axes = ((batch_leg,),)
        nodes = (
            replace(node, name=tangent, source=None, axes=lead + node.axes) if node.name == wrt else node
            for node in self.nodes
        )
        return self.with_nodes(nodes, output=lead + self.output, extra_sizes={batch_leg: batch})

    def slice(self, leg: str, indices: Sequence[int]) -> TensorNetwork:
        """Restrict ``leg`` to the positions ``indices`` on every node that carries it.

        Indices refer to the leg's current (possibly already sliced) range; repeated
        indices are allowed (sampling with replacement).
        """
        if leg not in self.legs:
            raise ValueError(f"leg {leg!r} is not in the network; legs are {self.legs}")
        current = self.size(leg)
        kept = tuple(int(i) for i in indices)
        if not kept:
            raise ValueError(f"indices for leg {leg!r} must not be empty")
        bad = [i for i in kept if not 0 <= i < current]
        if bad:
            raise ValueError(f"indices {bad} are out of range for leg {leg!r} of size {current}")
        previous = dict(self.slices)
        if leg in previous:
            kept = tuple(previous[leg][i] for i in kept)
        previous[leg] = kept
        return TensorNetwork(self.nodes, self.sizes, self.output, tuple(previous.items()))

    def fuse(self, other: TensorNetwork, output: Axes | None = None) -> TensorNetwork:
        """Contract two networks along the legs they share (node names must differ).

        By default the output is both outputs without the shared legs.
        """
        sizes = dict(self.sizes)
        for leg, size in other.sizes:
            if sizes.setdefault(leg, size) != size:
                raise ValueError(f"leg {leg!r} has size {sizes[leg]} in one network and {size} in the other")
        shared = set(self.legs) & set(other.legs)
        if output is None:
            output = tuple(axis for axis in self.output + other.output if not set(axis) & shared)
        return TensorNetwork(
            nodes=self.nodes + other.nodes,
            sizes=tuple(sizes.items()),
            output=output,
            slices=self.slices + tuple(s for s in other.slices if s[0] not in dict(self.slices)),
        )

    def scaled(self, value: float, name: str = "scale") -> TensorNetwork:
        """The network times a constant (a scalar node)."""
        return self.with_nodes(self.nodes + (Node(name, "scalar", (), value=float(value)),))

    def simplify(self) -> TensorNetwork:
        """The network after the rewrite rules of docs/reference.md §5 (same value, cheaper to contract)."""
        return _extension("simplify")(self)

    # --------------------------------------------------------------- execution
    def contract(self, *, strategy: str = "auto", **tensors: torch.Tensor) -> torch.Tensor:
        """Evaluate the network on ``tensors`` (one keyword per input node).

        ``strategy`` is ``"auto"`` (default), ``"einsum"`` (dense patterns, the reference),
        or another registered strategy (:func:`tnconv.execute.strategies`).
        """
        return _extension("contract")(self, tensors, strategy=strategy)

    # ---------------------------------------------------------------- diagrams
    def to_dot(self, *, simplified: bool = False, show_sizes: bool = False) -> str:
        """The network as Graphviz DOT text (see :func:`tnconv.diagrams.to_dot`)."""
        return _extension("to_dot")(self, simplified=simplified, show_sizes=show_sizes)

    def to_latex(self, *, simplified: bool = False, show_sizes: bool = False) -> str:
        """The network as a TikZ picture (see :func:`tnconv.diagrams.to_latex`)."""
        return _extension("to_latex")(self, simplified=simplified, show_sizes=show_sizes)
