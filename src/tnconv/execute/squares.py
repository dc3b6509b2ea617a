"""Strategy ``"square"``: ``J · J'`` through a materialised ``J`` when that is cheaper.

A :class:`~tnconv.symbolic.squares.SquareNetwork` (KFC, KFAC-reduce, gradient moments, GGN
diagonals and Gram matrices) is evaluated the cheaper, by ``opt_einsum``'s operation
count, of two ways: as the one fused network, or by contracting ``J`` with its axes laid
out ``[keep, outer, summed]`` (the summed positions innermost, as an im2col writes them)
and then one batched GEMM ``J Jᵀ`` per kept entry. Both steps go through the dispatcher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch._C._functorch import is_functorch_wrapped_tensor

from ..caching import cached
from ..simplify import simplify
from ..symbolic.network import TensorNetwork
from ..symbolic.squares import SquareNetwork, materialized_square, square_network
from .dispatch import bind, contract, register_strategy
from .im2col import im2col_gram, im2col_plan, symmetric_share
from .plan import dense_plan
from .separable import separable_plan
from .structured import structured_plan

#: Machine balance of the cost model: one byte moved costs as much time as this many flops
#: (about 50 GFLOP/s of float32 GEMM against 10 GB/s of memory traffic on two cores).
FLOPS_PER_BYTE = 5


@dataclass(frozen=True)
class SquareRecipe:
    """How :func:`contract_square` evaluates ``J · J'``: as ``direct`` (one network), or by
    contracting ``factor`` (= ``J`` with its axes ordered ``keep, outer, summed``) first and
    then one batched matrix product (or a sum of squares when nothing is ``outer``).

    ``route`` names the lowering: ``"direct"``, ``"materialized"`` (``J`` through the
    dispatcher, then GEMM), ``"separable"`` (``J`` = window sums read once from ``x``, see
    :mod:`.separable`) or ``"im2col"`` (``J`` copied once per batch chunk from window
    views, then GEMM accumulated, see :mod:`.im2col`). ``estimates`` holds, per route
    considered, ``(flops, bytes moved)`` of the cost model; ``product`` is the second step
    as a network; ``gram_shape`` is ``(∏keep, ∏outer, ∏summed)``.
    """

    direct: TensorNetwork | None
    factor: TensorNetwork | None
    product: TensorNetwork | None
    direct_flops: int
    materialized_flops: int
    gram_shape: tuple[int, int, int] = (0, 0, 0)
    output_shape: tuple[int, ...] = ()
    route: str = "direct"
    estimates: tuple[tuple[str, int, int], ...] = ()


def _elements(network: TensorNetwork) -> int:
    """Elements the dense contraction of ``network`` reads and writes (its pairwise steps)."""
    return dense_plan(network).moved


def cost(flops: int, moved: int) -> float:
    """The cost model's time unit: ``flops + FLOPS_PER_BYTE · bytes``."""
    return flops + FLOPS_PER_BYTE * moved


@cached(maxsize=1024)
def square_recipe(
    network: TensorNetwork,
    keep: tuple[int, ...] = (),
    outer: tuple[int, ...] = (),
    scale: float = 1.0,
    itemsize: int = 4,
) -> SquareRecipe:
    """Choose the lowering of ``J · J'`` (see :class:`SquareRecipe`).

    Between the generic routes the choice is ``opt_einsum``'s operation count: the fused
    network (``direct``) or ``J`` materialised then GEMM. A read-once lowering that applies
    (``separable``, ``im2col``) is costed by flops *and* bytes moved (:func:`cost`) and wins
    when it is cheaper than both: their ``J`` is written once (or never leaves the cache)
    and ``x`` is read once, where the generic routes copy ``x`` into einsum operands.
    """
    factor = simplify(network)
    fused = square_network(network, keep, outer, scale)
    # the plain fused network: the "square" strategy must not see itself again
    direct = simplify(TensorNetwork(fused.nodes, fused.sizes, fused.output, fused.slices))
    product = materialized_square(factor, keep, outer).scaled(scale)
    product_flops = dense_plan(product).flops
    materialized_flops = dense_plan(factor).flops + product_flops
    j_elements = math.prod(network.output_shape)
    # the dispatcher runs the fused network as window views plus an einsum ("structured"):
    # cost that network, not the dense one with Π as operands
    windowed = structured_plan(direct)
    executed = windowed.network if windowed is not None else direct
    direct_flops = dense_plan(executed).flops
    estimates = [
        ("direct", direct_flops, itemsize * _elements(executed)),
        ("materialized", materialized_flops, itemsize * (_elements(factor) + 2 * j_elements + _elements(product))),
    ]
    summed = tuple(a for a in range(len(network.output)) if a not in keep + outer)
    layout = tuple(network.output[a] for a in keep + outer + summed)
    ordered = network.with_nodes(network.nodes, output=layout)  # strategies simplify when contracting
    out_elements = math.prod(fused.output_shape)
    plan = separable_plan(network)
    if plan is not None:
        reads, writes = plan.bytes_per_element
        moved = itemsize * (reads + writes + out_elements)
        estimates.append(("separable", plan.madd_equivalents + product_flops, moved))
    summed_legs = {leg for a in summed for leg in network.output[a]}
    im2col = im2col_plan(ordered) if "n" in summed_legs else None
    if im2col is not None:
        x_elements = math.prod(im2col.x_shape)
        # its GEMM writes the block lower triangle only (J Jᵀ is symmetric), then mirrors it
        rows = math.prod(network.output_shape[a] for a in outer)
        gemm_flops = int(product_flops * symmetric_share(rows)) if outer else product_flops
        estimates.append(("im2col", gemm_flops, itemsize * (x_elements + 2 * j_elements + out_elements)))
    generic = "direct" if direct_flops <= materialized_flops else "materialized"
    if any(n.kind == "pattern" and n.legs[0] in factor.output_legs for n in factor.nodes):
        # J scatters through Π (the unfold of a transposed convolution's input): fused, Π would be
        # a dense operand of the einsum, and one NaN of x would reach the whole factor
        generic = "materialized"
    route = generic
    best = cost(*next(e[1:] for e in estimates if e[0] == generic))
    for name, flops, moved in estimates[2:]:
        if cost(flops, moved) <= best:
            route, best = name, cost(flops, moved)
    if route == "materialized" and plan is not None:
        route = "separable"  # the dispatcher evaluates a separable J by that lowering anyway
    if route == "direct":
        return SquareRecipe(
            direct, None, None, direct_flops, materialized_flops, route=route, estimates=tuple(estimates)
        )

    def count(axes: tuple[int, ...]) -> int:
        return math.prod(network.output_shape[a] for a in axes)

    gram_shape = (count(keep), count(outer), count(summed))
    return SquareRecipe(
        None,
        ordered,
        product,
        direct_flops,
        materialized_flops,
        gram_shape,
        direct.output_shape,
        route,
        tuple(estimates),
    )


def contract_square(
    network: TensorNetwork,
    tensors: Mapping[str, torch.Tensor],
    keep: tuple[int, ...] = (),
    outer: tuple[int, ...] = (),
    scale: float = 1.0,
) -> torch.Tensor:
    """``scale · J · J'`` (see :func:`~tnconv.symbolic.squares.square_network`), through the dispatcher."""
    return contract(_square(network, keep, outer, scale), tensors)


@cached(maxsize=1024)
def _square(network: TensorNetwork, keep: tuple[int, ...], outer: tuple[int, ...], scale: float) -> SquareNetwork:
    """:func:`square_network`, built once per signature (per-call Python overhead)."""
    return square_network(network, keep, outer, scale)


def square_runner(network: SquareNetwork, itemsize: int) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """``tensors -> scale · J · J'`` of ``network`` with its recipe (for ``itemsize``-byte
    elements) resolved once: what the dispatcher keeps per network (see ``bind``). The
    inner contraction of ``J`` is bound too (:func:`~tnconv.execute.dispatch.bind`: its
    inputs are ``network``'s, already checked), so a repeated call is tensor work only."""
    recipe = square_recipe(network.factor, network.keep, network.outer, network.scale, itemsize)  # type: ignore[arg-type]
    scale = network.scale
    checked = network.input_shapes
    if recipe.direct is not None:
        direct = bind(recipe.direct, checked)
        return lambda tensors: direct(tensors, None)
    if recipe.route == "im2col":
        plan = im2col_plan(recipe.factor)  # type: ignore[arg-type]
        return lambda tensors: im2col_gram(plan, tensors, recipe.gram_shape, scale).reshape(recipe.output_shape)  # type: ignore[arg-type]
    factor, gram_shape, output_shape = bind(recipe.factor, checked), recipe.gram_shape, recipe.output_shape  # type: ignore[arg-type]
    if gram_shape[2] == 1 and not network.outer:

        def run_squares(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
            result = factor(tensors, None).reshape(gram_shape).square().sum(2).reshape(output_shape)
            return result.mul_(scale) if scale != 1.0 else result  # fresh: scale in place

        return run_squares

    def run(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return scaled_gram(factor(tensors, None).reshape(gram_shape), scale).reshape(output_shape)

    return run


def scaled_gram(value: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · value @ valueᵀ`` per batch entry: ``[B, r, s] -> [B, r, r]``, one batched GEMM.

    ``value`` may be a strided view (KFAC-reduce's ``[G, d, N]`` read from ``[N, G, d]``): the
    GEMM takes it as a transposed operand, and the scale rides in its ``alpha`` (no pass over
    ``value`` or over the result to scale). Out of place under ``torch.func``.
    """
    if value.stride(2) != 1 and value.stride(1) != 1:  # no BLAS layout: one copy, not bmm's slow loop
        value = value.contiguous()
    if is_functorch_wrapped_tensor(value):  # torch.func: out of place (no write into a plain tensor)
        return torch.baddbmm(value.new_zeros(()), value, value.transpose(1, 2), beta=0, alpha=scale)
    batch, rows, _ = value.shape
    result = torch.empty((batch, rows, rows), dtype=value.dtype, device=value.device)
    return result.baddbmm_(value, value.transpose(1, 2), beta=0, alpha=scale)


def contract_square_network(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The ``"square"`` strategy: applies to :class:`SquareNetwork` s only."""
    if not isinstance(network, SquareNetwork) or network.factor is None:
        return None
    return square_runner(network, next(iter(tensors.values())).element_size())(tensors)


def _bind_square(network: TensorNetwork) -> Callable[..., torch.Tensor] | None:
    """The dispatcher's runner of a square network: one resolved recipe per element size."""
    if not isinstance(network, SquareNetwork) or network.factor is None:
        return None
    runners: dict[int, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]] = {}

    def runner(tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        itemsize = next(iter(tensors.values())).element_size()
        run = runners.get(itemsize)
        if run is None:
            run = runners[itemsize] = square_runner(network, itemsize)  # type: ignore[arg-type]
        return run(tensors)

    return runner


register_strategy(
    "square",
    contract_square_network,
    "J·J' through a materialised J when cheaper (curvature)",
    priority=10,
    bind=_bind_square,
)

__all__ = [
    "FLOPS_PER_BYTE",
    "SquareRecipe",
    "contract_square",
    "cost",
    "scaled_gram",
    "square_recipe",
    "square_runner",
]
