"""Structured execution: an index pattern applied to data becomes a strided view.

``x[…, i, …] · Π[i, o, k]`` is ``x_padded[…, S·o + Dl·k, …]``: a view of the padded data
with two axes ``(o, k)`` in place of ``i`` (``Tensor.unfold`` plus a dilation step). No
multiplication by the zeros of Π happens; the einsum that follows sees only data.

A pattern is *absorbed* into a data node when its ``i`` leg is carried by that node alone
(and is not open). Patterns whose ``i`` leg is open (input VJPs, folds, transposed
convolutions) stay dense. The strategy runs on the simplified network, so the rewrite
rules (pre-contracted constants, identities, trimmed inputs) apply first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..simplify import simplify
from ..symbolic.network import Node, TensorNetwork
from .dense import evaluate_dense
from .dispatch import register_strategy
from .windows import Unfold, window_views


@dataclass(frozen=True)
class StructuredPlan:
    """The network with absorbed patterns, and per data node the views that prepare its tensor."""

    network: TensorNetwork
    unfolds: tuple[tuple[str, str, tuple[tuple[str, int], ...], tuple[Unfold, ...]], ...]  # node, key, legs, steps


def _prefix_length(network: TensorNetwork, leg: str) -> int | None:
    kept = dict(network.slices).get(leg)
    if kept is None:
        return network.size(leg)
    return len(kept) if kept == tuple(range(len(kept))) else None


@cached(maxsize=1024)
def structured_plan(network: TensorNetwork) -> StructuredPlan | None:
    """Absorb every absorbable pattern of the simplified ``network``; ``None`` if there is none."""
    network = simplify(network)
    out = set(network.output_legs)
    steps: dict[str, list[Unfold]] = {}
    absorbed: set[str] = set()
    for node in network.nodes:
        if node.kind != "pattern":
            continue
        i, o, k = node.legs
        carriers = [n for n in network.nodes if n is not node and i in n.legs]
        if i in out or len(carriers) != 1:
            continue
        data = carriers[0]
        length = _prefix_length(network, i)
        if data.kind != "input" or (i,) not in data.axes or o in data.legs or k in data.legs or length is None:
            continue
        steps.setdefault(data.name, []).append(Unfold(i, node.pattern, length))  # type: ignore[arg-type]
        absorbed.add(node.name)
    if not absorbed:
        return None
    nodes, unfolds = [], []
    for node in network.nodes:
        if node.name in absorbed:
            continue
        if node.name in steps:
            by_leg = {step.leg: step for step in steps[node.name]}
            axes = _unfolded_axes(network, node, by_leg)
            legs = tuple((leg, network.size_of[leg]) for leg in node.legs)
            # a new tensor: its own name, so that other nodes reading the same key keep the original
            name = node.name + "~unfolded"
            unfolds.append((name, node.key, legs, tuple(steps[node.name])))
            node = Node(name, "input", axes)
        nodes.append(node)
    dropped = {step.leg for group in steps.values() for step in group}
    slices = tuple((leg, kept) for leg, kept in network.slices if leg not in dropped)
    used = {leg for n in nodes for leg in n.legs}
    sizes = tuple((leg, s) for leg, s in network.sizes if leg in used)
    return StructuredPlan(TensorNetwork(tuple(nodes), sizes, network.output, slices), tuple(unfolds))


def _pattern_legs(network: TensorNetwork, i: str) -> tuple[str, str]:
    node = next(n for n in network.nodes if n.kind == "pattern" and n.legs[0] == i)
    return node.legs[1], node.legs[2]


def _unfolded_axes(network: TensorNetwork, node: Node, by_leg: dict[str, Unfold]) -> tuple[tuple[str, ...], ...]:
    axes: list[tuple[str, ...]] = []
    for axis in node.axes:
        if len(axis) == 1 and axis[0] in by_leg:
            o, k = _pattern_legs(network, axis[0])
            axes += [(o,), (k,)]
        else:
            axes.append(axis)
    return tuple(axes)


def contract_structured(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Strategy ``"structured"``: patterns on data become strided views, the rest is einsum."""
    plan = structured_plan(network)
    if plan is None:
        return None
    prepared = dict(tensors)
    for name, key, legs, steps in plan.unfolds:
        t = tensors[key].reshape([size for _, size in legs])
        current = [leg for leg, _ in legs]
        prepared[name] = window_views(t, {current.index(step.leg): step for step in steps})
    first = next(iter(tensors.values()))
    return evaluate_dense(plan.network, prepared, first.dtype, first.device)


register_strategy(
    "structured", contract_structured, "index patterns on data become strided views, then einsum", priority=30
)
