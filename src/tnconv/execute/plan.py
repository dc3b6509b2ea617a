"""Dense contraction plans: the einsum equation, operands and contraction order of a network.

A plan is everything about a contraction that does not depend on data. Plans are cached
per network (networks are hashable and carry all sizes); the contraction order and the
compiled ``opt_einsum`` expression are cached per equation and shapes, so networks that
differ only in *which* positions a leg is sliced to share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import opt_einsum

from ..caching import cached
from ..symbolic.network import Node, TensorNetwork


@dataclass(frozen=True)
class DensePlan:
    """A cached dense-einsum plan of one network.

    Attributes:
        equation: the einsum equation over ``operands``.
        operands: the non-scalar nodes, in equation order.
        scale: the product of the scalar nodes.
        flops: opt_einsum's operation count of the chosen contraction order.
        output_shape: the shape of the result.
        moved: elements read and written by the pairwise steps of that order (every
            operand of a step read once, its result written once): the bytes term of the
            cost model, in elements.
    """

    equation: str
    operands: tuple[Node, ...]
    scale: float
    flops: int
    output_shape: tuple[int, ...]
    expression: object
    moved: int = 0


@cached(maxsize=1024)
def dense_plan(network: TensorNetwork) -> DensePlan:
    """The (cached) dense contraction plan of ``network``."""
    operands = tuple(node for node in network.nodes if node.kind != "scalar")
    scale = 1.0
    for node in network.nodes:
        if node.kind == "scalar":
            scale *= node.value
    equation = network.equation()
    shapes = tuple(tuple(network.size(leg) for leg in node.legs) for node in operands)
    flops, expression = compiled_expression(equation, shapes)
    moved = moved_elements(equation, shapes)
    return DensePlan(equation, operands, scale, flops, network.output_shape, expression, moved)


@cached(maxsize=1024, bypassable=False)
def moved_elements(equation: str, shapes: tuple[tuple[int, ...], ...]) -> int:
    """Elements read and written by the pairwise steps of ``equation``'s contraction order.

    >>> moved_elements("ab,bc->ac", ((2, 3), (3, 4)))   # 6 + 12 read, 8 written
    26
    """
    inputs = equation.split("->")[0].split(",")
    if len(inputs) == 1:
        return math.prod(s for shape in shapes for s in shape) + math.prod(_output_sizes(equation, shapes))
    _, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize="auto")
    sizes = info.size_dict
    total = 0
    for step in info.contraction_list:
        terms, result = step[2].split("->")
        operands = terms.split(",")
        total += sum(math.prod(sizes[c] for c in term) for term in operands) + math.prod(sizes[c] for c in result)
        if len(operands) == 2:  # a GEMM: an operand not laid out [batch, free, summed] is copied first
            left, right = operands
            for term, other in ((left, right), (right, left)):
                if _needs_copy(term, other, result):
                    total += 2 * math.prod(sizes[c] for c in term)
    return total


def _needs_copy(term: str, other: str, result: str) -> bool:
    """Whether a pairwise einsum step must permute ``term`` into GEMM layout: its batch legs
    (shared and kept) first, then its free and summed legs as two blocks, in either order.

    >>> _needs_copy("abcd", "aecd", "be")   # x x' over (n, spatial): b sits in the middle
    True
    >>> _needs_copy("gcs", "gds", "gcd")     # J Jᵀ on [G, d, N·O]: already a bmm operand
    False
    """
    kinds = ["b" if c in other and c in result else "s" if c in other else "f" for c in term]
    text = "".join(kinds).lstrip("b")
    if "b" in text:
        return True
    return text.count("fs") + text.count("sf") > 1


def _output_sizes(equation: str, shapes: tuple[tuple[int, ...], ...]) -> list[int]:
    inputs, output = equation.split("->")
    sizes = {c: n for term, shape in zip(inputs.split(","), shapes) for c, n in zip(term, shape)}
    return [sizes[c] for c in output]


@cached(maxsize=1024, bypassable=False)
def compiled_expression(equation: str, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, object]:
    """Contraction order and compiled ``opt_einsum`` expression of ``equation`` on ``shapes``.

    Cached apart from :func:`dense_plan` because networks that differ only in *which*
    positions a leg is sliced to (one per draw of a randomized VJP) share it.

    >>> compiled_expression("ab,bc->ac", ((2, 3), (3, 4)))[0]
    48
    """
    path, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize="auto")
    return int(info.opt_cost), opt_einsum.contract_expression(equation, *shapes, optimize=path)
