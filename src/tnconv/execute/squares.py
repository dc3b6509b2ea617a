"""Strategy ``"square"``: ``J · J'`` through a materialised ``J`` when that is cheaper.

A :class:`~tnconv.symbolic.squares.SquareNetwork` (KFC, KFAC-reduce, gradient moments, GGN
diagonals and Gram matrices) is evaluated the cheaper, by ``opt_einsum``'s operation
count, of two ways: as the one fused network, or by contracting ``J`` with its axes laid
out ``[keep, outer, summed]`` (the summed positions innermost, as an im2col writes them)
and then one batched GEMM ``J Jᵀ`` per kept entry. Both steps go through the dispatcher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..simplify import simplify
from ..symbolic.network import TensorNetwork
from ..symbolic.squares import SquareNetwork, materialized_square, square_network
from .dispatch import contract, register_strategy
from .plan import dense_plan
from .separable import separable_plan


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


@cached(maxsize=1024)
def square_recipe(
    network: TensorNetwork, keep: tuple[int, ...] = (), outer: tuple[int, ...] = (), scale: float = 1.0
) -> SquareRecipe:
    """Choose, by ``opt_einsum``'s operation count, between one contraction and materialising ``J``."""
    factor = simplify(network)
    fused = square_network(network, keep, outer, scale)
    separable = separable_plan(network) is not None
    # the plain fused network: the "square" strategy must not see itself again
    direct = simplify(TensorNetwork(fused.nodes, fused.sizes, fused.output, fused.slices))
    product = materialized_square(factor, keep, outer).scaled(scale)
    direct_flops = dense_plan(direct).flops
    materialized_flops = dense_plan(factor).flops + dense_plan(product).flops
    if separable:  # J is read-once window sums: always materialise it (it is small)
        materialized_flops = separable_plan(network).flops + dense_plan(product).flops  # type: ignore[union-attr]
    if direct_flops <= materialized_flops and not separable:
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
    """``scale · J · J'`` (see :func:`~tnconv.symbolic.squares.square_network`), through the dispatcher."""
    return contract(square_network(network, keep, outer, scale), tensors)


def contract_square_network(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The ``"square"`` strategy: applies to :class:`SquareNetwork` s only."""
    if not isinstance(network, SquareNetwork) or network.factor is None:
        return None
    recipe = square_recipe(network.factor, network.keep, network.outer, network.scale)
    if recipe.direct is not None:
        return contract(recipe.direct, tensors)
    value = contract(recipe.factor, tensors).reshape(recipe.gram_shape)  # type: ignore[arg-type]
    if recipe.gram_shape[2] == 1 and not network.outer:
        result = value.square().sum(2)
    else:
        result = torch.bmm(value, value.transpose(1, 2))
    result = result.reshape(recipe.output_shape)
    return result.mul_(network.scale) if network.scale != 1.0 else result  # a fresh tensor: scale in place


register_strategy(
    "square", contract_square_network, "J·J' through a materialised J when cheaper (curvature)", priority=10
)

__all__ = ["SquareRecipe", "contract_square", "square_recipe"]
