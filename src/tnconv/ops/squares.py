"""Products of a network with a copy of itself: the shape of every curvature statistic.

KFC, KFAC-reduce, gradient second moments, the GGN diagonal and its Gram matrix all are
``J · J'`` for some network ``J`` (unfolded input, per-sample gradient, GGN factor): a copy
``J'`` reads the same tensors, its summed legs are independent of ``J``'s (primed), and each
output axis of ``J`` is either

- *summed* between the copies (``n`` and ``o`` in KFC),
- *kept* on both (elementwise: the weight legs of the GGN diagonal), or
- *outer*: one free axis per copy (``(ci k)`` and ``(ci' k')`` in KFC).

:func:`square_network` builds that single network. :func:`contract_square` evaluates it,
either as one contraction or by first materialising ``J`` and then multiplying it with
itself, whichever ``opt_einsum`` counts fewer operations for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from ..contract import dense_plan
from ..network import Node, TensorNetwork


def _fresh(name: str, taken: set[str]) -> str:
    new = name + "'"
    while new in taken:
        new += "'"
    taken.add(new)
    return new


def primed_copy(network: TensorNetwork, legs: Iterable[str]) -> tuple[TensorNetwork, dict[str, str]]:
    """A copy of ``network`` reading the same tensors, with ``legs`` and every summed leg renamed.

    Nodes get fresh names (``x`` → ``x'``); input nodes read their original tensor
    (:attr:`~tnconv.network.Node.source`). Returns the copy and the leg mapping.
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


def square_network(network: TensorNetwork, keep: tuple[int, ...] = (), outer: tuple[int, ...] = ()) -> TensorNetwork:
    """``J · J'`` as one network.

    Args:
        network: ``J``.
        keep: output axes of ``J`` kept on both copies (elementwise product).
        outer: output axes of ``J`` that stay free on each copy (outer product).

    Every other output axis of ``J`` is summed between the copies. The output is the
    ``keep`` axes, then the ``outer`` axes of ``J``, then those of ``J'``.

    >>> from tnconv.network import Node, TensorNetwork
    >>> j = TensorNetwork((Node("J", "input", (("a",), ("b",))),), (("a", 3), ("b", 4)), (("a",), ("b",)))
    >>> square_network(j, outer=(1,)).equation()      # J^T J
    'ab,ac->bc'
    """
    _check_axes(network, keep, outer)
    outer_legs = [leg for a in outer for leg in network.output[a]]
    copy, mapping = primed_copy(network, outer_legs)
    primed_outer = tuple(tuple(mapping[leg] for leg in network.output[a]) for a in outer)
    output = tuple(network.output[a] for a in keep + outer) + primed_outer
    return network.fuse(copy, output=output)


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


@dataclass(frozen=True)
class SquareRecipe:
    """How :func:`contract_square` evaluates ``J · J'``: as ``direct`` (one network), or by
    contracting ``factor`` (= ``J`` with its axes ordered ``keep, outer, summed``) first and
    then one batched matrix product (or a sum of squares when nothing is ``outer``).

    ``product`` is that second step as a network (for inspection and its operation count);
    ``gram_shape`` is ``(∏keep, ∏outer, ∏summed)`` and ``output_shape`` the result's shape.
    """

    direct: TensorNetwork | None
    factor: TensorNetwork | None
    product: TensorNetwork | None
    direct_flops: int
    materialized_flops: int
    gram_shape: tuple[int, int, int] = (0, 0, 0)
    output_shape: tuple[int, ...] = ()


@lru_cache(maxsize=1024)
def square_recipe(
    network: TensorNetwork, keep: tuple[int, ...] = (), outer: tuple[int, ...] = (), scale: float = 1.0
) -> SquareRecipe:
    """Choose, by ``opt_einsum``'s operation count, between one contraction and materialising ``J``."""
    factor = network.simplify()
    direct = square_network(network, keep, outer).scaled(scale).simplify()
    product = materialized_square(factor, keep, outer).scaled(scale)
    direct_flops = dense_plan(direct).flops
    materialized_flops = dense_plan(factor).flops + dense_plan(product).flops
    if direct_flops <= materialized_flops:
        return SquareRecipe(direct, None, None, direct_flops, materialized_flops)
    summed = tuple(a for a in range(len(network.output)) if a not in keep + outer)
    layout = tuple(network.output[a] for a in keep + outer + summed)
    ordered = network.with_nodes(network.nodes, output=layout)  # strategies simplify when contracting

    def count(axes: tuple[int, ...]) -> int:
        return math.prod(network.output_shape[a] for a in axes)

    gram_shape = (count(keep), count(outer), count(summed))
    return SquareRecipe(None, ordered, product, direct_flops, materialized_flops, gram_shape, direct.output_shape)


def contract_square(
    network: TensorNetwork,
    tensors: Mapping[str, torch.Tensor],
    keep: tuple[int, ...] = (),
    outer: tuple[int, ...] = (),
    scale: float = 1.0,
) -> torch.Tensor:
    """``scale · J · J'`` (see :func:`square_network`) evaluated the cheaper of two ways."""
    recipe = square_recipe(network, keep, outer, scale)
    if recipe.direct is not None:
        return recipe.direct.contract(**tensors)
    # J laid out as [keep, outer, summed] in one copy (the summed positions innermost, as an
    # im2col writes them), then one batched GEMM J J^T per kept entry
    value = recipe.factor.contract(**tensors).reshape(recipe.gram_shape)  # type: ignore[union-attr]
    if recipe.gram_shape[2] == 1 and not outer:
        result = value.square().sum(2)
    else:
        result = torch.bmm(value, value.transpose(1, 2))
    result = result.reshape(recipe.output_shape)
    return result * scale if scale != 1.0 else result


__all__ = ["contract_square", "materialized_square", "primed_copy", "square_network", "square_recipe"]
