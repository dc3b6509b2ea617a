"""Products of a network with a copy of itself: the shape of every curvature statistic.

KFC, KFAC-reduce, gradient second moments, the GGN diagonal and its Gram matrix all are
``J · J'`` for some network ``J`` (unfolded input, per-sample gradient, GGN factor): a copy
``J'`` reads the same tensors, its summed legs are independent of ``J``'s (primed), and each
output axis of ``J`` is either

- *summed* between the copies (``n`` and ``o`` in KFC),
- *kept* on both (elementwise: the weight legs of the GGN diagonal), or
- *outer*: one free axis per copy (``(ci k)`` and ``(ci' k')`` in KFC).

:func:`square_network` builds that single network, a :class:`SquareNetwork` that remembers
its factor ``J``. The dispatcher's ``"square"`` strategy (:mod:`tnconv.execute.squares`)
evaluates it either as one contraction or by first materialising ``J`` and multiplying it
with itself, whichever is cheaper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..caching import cached
from .network import Node, TensorNetwork


def _fresh(name: str, taken: set[str]) -> str:
    new = name + "'"
    while new in taken:
        new += "'"
    taken.add(new)
    return new


def primed_copy(network: TensorNetwork, legs: Iterable[str]) -> tuple[TensorNetwork, dict[str, str]]:
    """A copy of ``network`` reading the same tensors, with ``legs`` and every summed leg renamed.

    Nodes get fresh names (``x`` → ``x'``); input nodes read their original tensor
    (:attr:`~tnconv.symbolic.network.Node.source`). Returns the copy and the leg mapping.
    """
    out = set(network.output_legs)
    renamed = set(legs) | {leg for leg in network.legs if leg not in out}
    taken = set(network.legs)
    mapping = {leg: _fresh(leg, taken) for leg in network.legs if leg in renamed}
    names = {node.name for node in network.nodes}
    nodes = tuple(
        replace(
            node.renamed(mapping),
            name=_fresh(node.name, names),
            source=node.key if node.kind == "input" else None,
        )
        for node in network.nodes
    )
    sizes = tuple((mapping.get(leg, leg), size) for leg, size in network.sizes)
    output = tuple(tuple(mapping.get(leg, leg) for leg in axis) for axis in network.output)
    slices = tuple((mapping.get(leg, leg), kept) for leg, kept in network.slices)
    return TensorNetwork(nodes, sizes, output, slices), mapping


def _check_axes(network: TensorNetwork, keep: tuple[int, ...], outer: tuple[int, ...]) -> None:
    count = len(network.output)
    if set(keep) & set(outer) or any(not 0 <= a < count for a in keep + outer):
        raise ValueError(f"keep={keep} and outer={outer} must be disjoint axes of a network with {count} output axes")


@dataclass(frozen=True, eq=False)
class SquareNetwork(TensorNetwork):
    """``scale · J · J'`` as one network that remembers ``J`` (``factor``), ``keep``, ``outer``
    and ``scale``, so that the dispatcher can evaluate it through a materialised ``J``.

    Its nodes, legs and output are those of the fused network; every transformation of it
    (``vjp``, ``slice``, ``simplify``, …) returns a plain :class:`TensorNetwork`.
    """

    factor: TensorNetwork | None = None
    keep: tuple[int, ...] = ()
    outer: tuple[int, ...] = ()
    scale: float = 1.0

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is SquareNetwork
            and TensorNetwork.__eq__(self, other)  # type: ignore[operator]
            and (self.factor, self.keep, self.outer, self.scale) == (other.factor, other.keep, other.outer, other.scale)  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return self._hash


@cached(maxsize=1024)
def square_network(
    network: TensorNetwork, keep: tuple[int, ...] = (), outer: tuple[int, ...] = (), scale: float = 1.0
) -> SquareNetwork:
    """``scale · J · J'`` as one network.

    Args:
        network: ``J``.
        keep: output axes of ``J`` kept on both copies (elementwise product).
        outer: output axes of ``J`` that stay free on each copy (outer product).
        scale: a constant factor (a scalar node when not 1).

    Every other output axis of ``J`` is summed between the copies. The output is the
    ``keep`` axes, then the ``outer`` axes of ``J``, then those of ``J'``.

    >>> from tnconv.symbolic.network import Node, TensorNetwork
    >>> j = TensorNetwork((Node("J", "input", (("a",), ("b",))),), (("a", 3), ("b", 4)), (("a",), ("b",)))
    >>> square_network(j, outer=(1,)).equation()      # J^T J
    'ab,ac->bc'
    """
    _check_axes(network, keep, outer)
    outer_legs = [leg for a in outer for leg in network.output[a]]
    copy, mapping = primed_copy(network, outer_legs)
    primed_outer = tuple(tuple(mapping[leg] for leg in network.output[a]) for a in outer)
    output = tuple(network.output[a] for a in keep + outer) + primed_outer
    fused = network.fuse(copy, output=output)
    if scale != 1.0:
        fused = fused.scaled(scale)
    return SquareNetwork(
        fused.nodes, fused.sizes, fused.output, fused.slices, factor=network, keep=keep, outer=outer, scale=float(scale)
    )


def materialized_square(
    network: TensorNetwork, keep: tuple[int, ...] = (), outer: tuple[int, ...] = ()
) -> TensorNetwork:
    """``J · J'`` on a materialised ``J``: a two-node network whose input ``J`` is ``network``'s value."""
    _check_axes(network, keep, outer)
    single = TensorNetwork(
        (Node("J", "input", network.output),),
        tuple((leg, network.size(leg)) for leg in network.output_legs),
        network.output,
    )
    return square_network(single, keep, outer)


__all__ = ["SquareNetwork", "materialized_square", "primed_copy", "square_network"]
