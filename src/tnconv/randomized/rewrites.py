"""Network rewrites of randomized backpropagation: slicing one draw out of a VJP network.

:func:`windows_network` absorbs the windows ``x·Π_1⋯Π_D`` into one node with a joint
output-position leg; :func:`sliced_network` restricts a leg to a draw and rescales;
:func:`materialize_slices` turns slices that no Π carries into smaller inputs (an ordinary
network again); :func:`restore_output` embeds a result with sliced output legs in zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..caching import cached
from ..symbolic.network import Node, TensorNetwork
from .sampling import JOINT, Draw


@cached(maxsize=256)
def windows_network(vjp: TensorNetwork, data: str = "x", joint: str = JOINT) -> TensorNetwork:
    """``vjp`` with the windows ``data·Π_1⋯Π_D`` absorbed into one input node ``u``.

    ``u`` carries ``data``'s first (batch) axis, the joint output-position leg ``joint``
    (size ``∏O``, row-major over ``o_1 … o_D``), the taps ``k_1 … k_D``, then ``data``'s other
    non-spatial axes (channels) — the layout :func:`gather_windows` produces. Every other
    node's output-position axes are merged into ``joint`` (a reshape, e.g. ``v[n, (g co), o]``).
    The output keeps ``vjp``'s first axis, then puts the taps before the other axes, in
    ``u``'s order, so that contracting it is a plain matrix product (no copy of ``u``):
    ``[(g co), k…, ci]`` for the weight VJP.
    """
    patterns = [node for node in vjp.nodes if node.kind == "pattern"]
    input_legs = {node.axes[0][0] for node in patterns}
    position_legs = tuple(node.axes[1][0] for node in patterns)
    taps = tuple(node.axes[2] for node in patterns)
    sizes = vjp.size_of
    source = vjp.node(data)
    lead, *channels = [axis for axis in source.axes if not set(axis) & input_legs]
    nodes = [Node("u", "input", (lead, (joint,), *taps, *channels))]
    trailing = tuple((leg,) for leg in position_legs)
    for node in vjp.nodes:
        if node.name == data or node.kind == "pattern":
            continue
        axes = node.axes
        if set(node.legs) & set(position_legs):
            if axes[-len(trailing) :] != trailing or set(node.legs[: -len(trailing)]) & set(position_legs):
                raise ValueError(f"node {node.name!r} does not carry the output positions as its trailing axes")
            axes = axes[: -len(trailing)] + ((joint,),)
        nodes.append(Node(node.name, node.kind, axes, node.pattern, node.value))
    first, *rest = vjp.output
    output = (first, *[axis for axis in rest if axis in taps], *[axis for axis in rest if axis not in taps])
    return vjp.with_nodes(
        nodes, output=tuple(output), extra_sizes={joint: math.prod(sizes[leg] for leg in position_legs)}
    )


def materialize_slices(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor]
) -> tuple[TensorNetwork, dict[str, torch.Tensor]] | None:
    """``network``'s slices made concrete: the sliced legs shrink and the input tensors are
    sliced (``index_select``) to match, so the result is an ordinary, unsliced network.

    Its value is the sliced network's. It only applies when no pattern or constant carries a
    sliced leg (a sliced Π is no longer an index pattern) and every identity's two legs are
    sliced alike; ``None`` otherwise. The point: the smaller network is again a plain
    convolution VJP (e.g. over fewer samples), which the ``"native"`` strategy hands to
    PyTorch's kernels, and it carries no indices, so plans are cached per size, not per draw.
    """
    slices = dict(network.slices)
    keys = [node.key for node in network.nodes if node.kind == "input"]
    if len(set(keys)) != len(keys):
        return None
    for node in network.nodes:
        sliced = [slices.get(leg) for leg in node.legs]
        if node.kind in ("pattern", "constant") and any(kept is not None for kept in sliced):
            return None
        if node.kind == "identity" and sliced[0] != sliced[1]:
            return None
    sizes = network.size_of
    shrunk = {leg: len(slices[leg]) if leg in slices else size for leg, size in sizes.items()}
    inputs = {}
    for node in network.nodes:
        if node.kind != "input":
            continue
        tensor = tensors[node.key].reshape([sizes[leg] for leg in node.legs])
        for dim, leg in enumerate(node.legs):
            if leg in slices:
                tensor = tensor.index_select(dim, torch.tensor(slices[leg], device=tensor.device))
        inputs[node.key] = tensor.reshape([math.prod(shrunk[leg] for leg in axis) for axis in node.axes])
    reduced = TensorNetwork(network.nodes, tuple(shrunk.items()), network.output)
    return reduced, inputs


def resized(network: TensorNetwork, leg: str, size: int) -> TensorNetwork:
    """``network`` with ``leg`` of another size (its inputs already hold that many positions)."""
    sizes = tuple((name, size if name == leg else s) for name, s in network.sizes)
    return TensorNetwork(network.nodes, sizes, network.output, network.slices)


def sliced_network(network: TensorNetwork, leg: str, draw: Draw) -> TensorNetwork:
    """``network`` restricted to the drawn positions of ``leg`` and rescaled (not simplified).

    A leg tied by an identity to an output leg (``g``–``g'`` in the input VJP) is sliced on
    both sides, so no dense identity scatters the result; :func:`restore_output` puts the
    result back into the full output.
    """
    network = network.slice(leg, draw.indices)
    outputs = set(network.output_legs)
    for node in network.nodes:
        if node.kind == "identity" and leg in node.legs:
            (other,) = [partner for partner in node.legs if partner != leg]
            if other in outputs:
                network = network.slice(other, draw.indices)
    return network.scaled(draw.scale, name="keep_scale")


def restore_output(result: torch.Tensor, network: TensorNetwork) -> torch.Tensor:
    """Embed the result of a network with sliced output legs into zeros of the full output."""
    sliced = dict(network.slices)
    legs = network.output_legs
    if not any(leg in sliced for leg in legs):
        return result
    full_sizes = network.size_of
    result = result.reshape([network.size(leg) for leg in legs])
    for dim, leg in enumerate(legs):
        if leg in sliced:
            shape = list(result.shape)
            shape[dim] = full_sizes[leg]
            index = torch.tensor(sliced[leg], device=result.device)
            result = result.new_zeros(shape).index_copy_(dim, index, result)
    return result.reshape([math.prod(full_sizes[leg] for leg in axis) for axis in network.output])
