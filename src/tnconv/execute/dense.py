"""Dense evaluation: every node as a dense tensor, contracted by the planned einsum.

This is the reference strategy ``"einsum"`` (index patterns multiplied as 0/1 tensors) and
the last step of the others, which hand it networks whose patterns they have already
turned into views of the data. ``"simplified"`` is the dense einsum of the simplified
network.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..caching import cached
from ..simplify import simplify
from ..symbolic.network import Node, TensorNetwork
from .constants import identity_tensor, ones_tensor, pattern_tensor
from .dispatch import register_strategy
from .plan import dense_plan


@cached(maxsize=4096)
def contiguous_start(kept: tuple[int, ...]) -> int | None:
    """The first index if ``kept`` is a run ``a, a+1, …`` (a slice that is a view), else ``None``."""
    start = kept[0]
    return start if kept == tuple(range(start, start + len(kept))) else None


def _slice_legs(tensor: torch.Tensor, legs: tuple[str, ...], slices: Mapping[str, tuple[int, ...]]) -> torch.Tensor:
    for axis, leg in enumerate(legs):
        kept = slices.get(leg)
        if kept is None:
            continue
        start = contiguous_start(kept)
        if start is not None:  # a run of positions (trimmed inputs): a view, no copy
            tensor = tensor.narrow(axis, start, len(kept))
        else:
            tensor = tensor.index_select(axis, torch.tensor(kept, device=tensor.device))
    return tensor


def dense_operand(
    network: TensorNetwork, node: Node, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The dense tensor of ``node`` with one dimension per leg, sliced as the network says."""
    full = network.size_of
    if node.kind == "input":
        tensor = tensors[node.key].reshape([full[leg] for leg in node.legs])
    elif node.kind == "pattern":
        tensor = pattern_tensor(node.pattern, dtype, device)  # type: ignore[arg-type]
    elif node.kind == "identity":
        tensor = identity_tensor(full[node.legs[0]], dtype, device)
    elif node.kind == "ones":
        tensor = ones_tensor(full[node.legs[0]], dtype, device)
    elif node.kind == "constant":
        tensor = constant_value(node.network, dtype, device)  # type: ignore[arg-type]
    else:
        raise ValueError(f"node {node.name!r} of kind {node.kind!r} has no dense operand")
    return _slice_legs(tensor, node.legs, dict(network.slices))


@cached(maxsize=256, tensors=True)
def constant_value(network: TensorNetwork, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The dense value of a data-independent network (cached; do not modify it)."""
    return evaluate_dense(network, {}, dtype, device).reshape([network.size(leg) for leg in network.output_legs])


def contract_einsum(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Reference strategy: materialise every pattern densely and run the planned einsum."""
    first = next(iter(tensors.values()))
    return evaluate_dense(network, tensors, first.dtype, first.device)


def evaluate_dense(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Contract ``network`` with every non-input node as a dense tensor."""
    plan = dense_plan(network)
    operands = [dense_operand(network, node, tensors, dtype, device) for node in plan.operands]
    result = plan.expression(*operands, backend="torch")  # type: ignore[operator]
    result = result.reshape(plan.output_shape)
    return result * plan.scale if plan.scale != 1.0 else result


def contract_simplified(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Strategy ``"simplified"``: the dense einsum of the simplified network (always applies)."""
    return contract_einsum(simplify(network), tensors)


register_strategy(
    "simplified", contract_simplified, "dense einsum of the simplified network (always applies)", priority=40
)
register_strategy(
    "einsum", contract_einsum, "dense index patterns: the reference (always applies)", auto=False, priority=90
)
