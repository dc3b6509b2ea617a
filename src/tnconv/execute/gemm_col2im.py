"""Strategy ``"gemm_col2im"``: networks whose patterns scatter into the output, as a
contraction of the data alone followed by a fold.

An input VJP, an input MJP or a transposed convolution of any ``D`` (PyTorch has kernels for
``D ≤ 3`` only, and ``"native"`` takes those) is ``Σ_{o,k} u[…, o, k] Π[i, o, k]`` with
``u`` the contraction of the data nodes alone (``v · w`` over the output channels): no index
pattern in it. So ``u`` is contracted first, through the dispatcher (a GEMM-shaped einsum of
data), and then folded by the ``"col2im"`` strategy (strided adds into a padded buffer).
No data is ever multiplied by a zero of ``Π``, so NaN/inf reach exactly the outputs whose
windows read them (the ``"simplified"`` fallback would spread one NaN to whole maps).

The network qualifies when every pattern's ``i`` leg is open and carried by that pattern
alone, its ``o`` and ``k`` legs are carried by data nodes (not open), and the rest is data.

>>> import torch, tnconv
>>> tn = tnconv.networks.conv((1, 2, 4, 4, 4, 4), (3, 2, 2, 2, 2, 2), stride=2).vjp("x")
>>> w, v = torch.randn(3, 2, 2, 2, 2, 2, dtype=torch.float64), torch.randn(1, 3, 2, 2, 2, 2, dtype=torch.float64)
>>> torch.allclose(contract(tn, {"w": w, "v": v}), contract(tn, {"w": w, "v": v}, strategy="einsum"))
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..symbolic.network import Node, TensorNetwork
from .col2im import col2im_plan
from .dispatch import contract, register_strategy


@dataclass(frozen=True)
class GemmCol2imPlan:
    """``data``: the data nodes' network with output ``u`` (one axis per leg); ``fold``: ``u``
    and the patterns, the original output."""

    data: TensorNetwork
    fold: TensorNetwork


@cached(maxsize=1024)
def gemm_col2im_plan(network: TensorNetwork) -> GemmCol2imPlan | None:
    """The plan, or ``None`` when ``network`` is not of that shape."""
    if network.slices:
        return None
    patterns = [n for n in network.nodes if n.kind == "pattern"]
    rest = [n for n in network.nodes if n.kind != "pattern"]
    if not patterns or any(n.kind not in ("input", "scalar") for n in rest) or not any(n.kind == "input" for n in rest):
        return None
    out = network.output_legs
    window_legs: list[str] = []
    for node in patterns:
        i, o, k = node.legs
        if i not in out or o in out or k in out:
            return None
        if any(n is not node and i in n.legs for n in network.nodes):
            return None
        if any(any(leg in n.legs for n in patterns if n is not node) for leg in (o, k)):
            return None
        if not any(o in n.legs for n in rest) or not any(k in n.legs for n in rest):
            return None
        window_legs += [o, k]
    pattern_i = {n.legs[0] for n in patterns}
    plain = [leg for leg in out if leg not in pattern_i]
    carried = {leg for n in rest for leg in n.legs}
    if any(leg not in carried for leg in plain):
        return None
    u_legs = tuple(plain) + tuple(window_legs)
    sizes = dict(network.sizes)
    used = {leg for n in rest for leg in n.legs}
    data = TensorNetwork(
        tuple(rest), tuple((leg, s) for leg, s in sizes.items() if leg in used), tuple((leg,) for leg in u_legs)
    )
    u = Node("u~", "input", tuple((leg,) for leg in u_legs))
    fold_nodes = (u, *patterns)
    fold_used = {leg for n in fold_nodes for leg in n.legs}
    fold = TensorNetwork(fold_nodes, tuple((leg, s) for leg, s in sizes.items() if leg in fold_used), network.output)
    if col2im_plan(fold) is None:
        return None
    return GemmCol2imPlan(data, fold)


def contract_gemm_col2im(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Strategy ``"gemm_col2im"``: contract the data, then fold it (see the module docs)."""
    plan = gemm_col2im_plan(network)
    if plan is None:
        return None
    u = contract(plan.data, {key: tensors[key] for key in plan.data.inputs})
    return contract(plan.fold, {"u~": u}, "col2im")


register_strategy(
    "gemm_col2im",
    contract_gemm_col2im,
    "input VJPs / transposed convolutions of any D: the data contracted first, then col2im (no Π)",
    priority=27,
)

__all__ = ["GemmCol2imPlan", "contract_gemm_col2im", "gemm_col2im_plan"]
