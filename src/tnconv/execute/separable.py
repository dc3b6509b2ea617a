"""Strategy ``"separable"``: window sums as small matrices on the data's own axes.

KFAC-reduce's ``ū = Σ_o u`` (and ``Σ_{n,o} u`` of the bias row) is
``x[n, c, i_1…i_D] · Π_1[i_1,o_1,k_1] ⋯ Π_D[i_D,o_D,k_D]`` with every window leg ``o_d``
summed and carried by its pattern alone. Each ``Σ_o Π_d[i, o, k]`` is then a tiny
``[I_d, K_d]`` 0/1 matrix ``M_d`` (for a transposed convolution's unfold, whose data leg
is ``o``, ``M_d[o, k] = Σ_i Π_d[i, o, k]``), built from the hyper-parameters with
``arange`` (never from a dense ``Π``), and the network is ``x ×_D M_D ⋯ ×_1 M_1``:

1. the contiguous (last) axis first: one ``[rows, I_D] @ [I_D, K_D]`` product reads ``x``
   once in memory order and writes ``K_D/I_D`` of it; trailing axes whose ``M`` is all ones
   (``K = 1``, stride 1, no padding: 1×1 layers) are summed together with one ``sum``;
2. every other axis on the already reduced tensor (a ``I_d/K_d`` smaller copy);
3. legs of ``x`` missing from the output (the batch of the bias row) are summed last.

No copy of ``x`` is made (no pad, no permute, no unfold). The only non-zero products are
those with ``M``'s ones; where ``M`` is 0 a non-finite input would give ``0·NaN = NaN``, so
a non-finite result (which a non-finite input always causes, as every element of ``x`` is
multiplied) is recomputed exactly as sums over strided window views — NaN/inf then reach
exactly the outputs whose windows read them, as with ``torch.nn.functional.unfold``.

>>> import torch, tnconv
>>> tn = tnconv.networks.kfac_reduce((2, 3, 9), 3, stride=2)
>>> x = torch.randn(2, 3, 9, dtype=torch.float64)
>>> torch.allclose(contract(tn, {"x": x}), contract(tn, {"x": x}, strategy="einsum"))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..spec.pattern import IndexPattern
from ..symbolic.network import TensorNetwork
from .dispatch import contract, register_strategy
from .windows import Unfold, window_views


@dataclass(frozen=True)
class AxisSum:
    """``Σ_w Π[…]`` over the private window leg of one pattern: the matrix ``M[data, k]``."""

    axis: int  # axis of x (after reshaping x to one dimension per leg)
    pattern: IndexPattern
    transposed: bool  # the data leg is Π's ``o`` (unfold of a transposed convolution's input)
    k_leg: str


@dataclass(frozen=True)
class SeparablePlan:
    """How :func:`contract_separable` evaluates a network ``x · Π_1 ⋯ Π_D`` with summed windows.

    ``x_shape`` is ``x`` with one dimension per leg (``x_legs``); ``sums`` are the per-axis
    matrices; ``summed`` the axes (after the sums) reduced at the end; ``order`` the
    permutation of the remaining axes to the output legs; ``output_shape`` the result's.
    """

    key: str
    x_shape: tuple[int, ...]
    x_legs: tuple[str, ...]
    sums: tuple[AxisSum, ...]
    summed: tuple[int, ...]
    order: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def flops(self) -> int:
        """Multiply-adds of the per-axis products (the final sums are counted as reads)."""
        shape, total = list(self.x_shape), 0
        for step in sorted(self.sums, key=lambda s: -s.axis):
            size, taps = shape[step.axis], step.pattern.kernel_size
            total += math.prod(shape) // size * size * taps
            shape[step.axis] = taps
        return total

    @property
    def bytes_per_element(self) -> tuple[int, int]:
        """Elements read and written: ``x`` once, plus the (small) intermediates."""
        shape, reads, writes = list(self.x_shape), 0, 0
        for step in sorted(self.sums, key=lambda s: -s.axis):
            reads += math.prod(shape)
            shape[step.axis] = step.pattern.kernel_size
            writes += math.prod(shape)
        return reads, writes


@cached(maxsize=1024)
def separable_plan(network: TensorNetwork) -> SeparablePlan | None:
    """The plan if ``network`` is one data input times patterns whose window legs are private
    and summed (and whose ``k`` legs are open); ``None`` otherwise (also for sliced networks)."""
    if network.slices:
        return None
    inputs = [n for n in network.nodes if n.kind == "input"]
    others = [n for n in network.nodes if n.kind != "input"]
    if len(inputs) != 1 or not others or any(n.kind != "pattern" for n in others):
        return None
    x = inputs[0]
    legs = x.legs
    if len(set(legs)) != len(legs):
        return None
    out = set(network.output_legs)
    sums = []
    for node in others:
        i, o, k = node.legs
        if i in legs and o not in legs:
            data, window, transposed = i, o, False
        elif o in legs and i not in legs:
            data, window, transposed = o, i, True
        else:
            return None
        if k in legs or k not in out or window in out or data in out:
            return None
        if any(n is not node and (window in n.legs or k in n.legs or data in n.legs) for n in others):
            return None
        sums.append(AxisSum(legs.index(data), node.pattern, transposed, k))  # type: ignore[arg-type]
    if len({s.axis for s in sums}) != len(sums):
        return None
    after = list(legs)
    for s in sums:
        after[s.axis] = s.k_leg
    output_legs = network.output_legs
    if len(set(output_legs)) != len(output_legs) or not set(output_legs) <= set(after):
        return None
    summed = tuple(a for a, leg in enumerate(after) if leg not in out)
    rest = [leg for leg in after if leg in out]
    order = tuple(rest.index(leg) for leg in output_legs)
    x_shape = tuple(network.size(leg) for leg in legs)
    return SeparablePlan(x.key, x_shape, legs, tuple(sums), summed, order, network.output_shape)


@cached(maxsize=256, tensors=True, bypassable=False)
def window_count_matrix(
    pattern: IndexPattern, transposed: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``M[i, k] = Σ_o Π[i, o, k]`` (``[I, K]``), or ``transposed``: ``M[o, k] = Σ_i Π[i, o, k]``
    (``[O, K]``), from the hyper-parameters (``O(I·K)``, no dense ``Π``)."""
    taps = torch.arange(pattern.kernel_size, device=device).view(1, -1) * pattern.dilation
    if transposed:
        position = torch.arange(pattern.output_size, device=device).view(-1, 1) * pattern.stride + taps
        position = position - pattern.padding
        return ((position >= 0) & (position < pattern.input_size)).to(dtype)
    r = torch.arange(pattern.input_size, device=device).view(-1, 1) + pattern.padding - taps
    o = torch.div(r, pattern.stride, rounding_mode="floor")
    return ((r >= 0) & (r % pattern.stride == 0) & (o < pattern.output_size)).to(dtype)


def _all_ones(step: AxisSum) -> bool:
    p = step.pattern
    return p.kernel_size == 1 and (
        (not step.transposed and p.is_identity)
        or (step.transposed and p.stride == 1 and p.padding == 0 and p.input_size == p.output_size)
    )


def _reduce(t: torch.Tensor, plan: SeparablePlan) -> torch.Tensor:
    steps = sorted(plan.sums, key=lambda s: -s.axis)
    last = t.dim() - 1
    # trailing all-ones axes (1×1 layers): one sum over a flattened view
    ones = 0
    while ones < len(steps) and steps[ones].axis == last - ones and _all_ones(steps[ones]):
        ones += 1
    if ones:
        t = t.reshape(*t.shape[: last + 1 - ones], -1).sum(-1)
        t = t.view(*t.shape, *([1] * ones))
    for step in steps[ones:]:
        m = window_count_matrix(step.pattern, step.transposed, t.dtype, t.device)
        if step.axis == t.dim() - 1:
            t = t @ m
        else:
            t = torch.matmul(t.movedim(step.axis, -1), m).movedim(-1, step.axis)
    return t


def _reduce_exact(t: torch.Tensor, plan: SeparablePlan) -> torch.Tensor:
    """The same sums over strided window views: non-finite values reach only their windows."""
    steps = sorted(plan.sums, key=lambda s: -s.axis)
    for step in steps:
        p = step.pattern
        if step.transposed:  # u[…, i, k] = x[…, o] with i = S·o + Dl·k − P: sum over i = over the valid o
            m = window_count_matrix(p, True, torch.bool, t.device)  # [O, K]
            expanded = t.movedim(step.axis, -1).unsqueeze(-1)  # [..., O, 1]
            zero = torch.zeros((), dtype=t.dtype, device=t.device)
            t = torch.where(m, expanded, zero).sum(-2).movedim(-1, step.axis)
        else:
            view = window_views(t, {step.axis: Unfold("i", p, t.shape[step.axis])})  # [..., O, K, ...]
            t = view.sum(step.axis)
    return t


def contract_separable(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Strategy ``"separable"``: ``x ×_d M_d`` on the data's axes (see the module docs)."""
    plan = separable_plan(network)
    if plan is None:
        return None
    x = tensors[plan.key].reshape(plan.x_shape)
    t = _reduce(x, plan)
    if not bool(torch.isfinite(t).all()):
        t = _reduce_exact(x, plan)
    if plan.summed:
        t = t.sum(plan.summed)
    return t.permute(plan.order).reshape(plan.output_shape)


def window_sums(network: TensorNetwork, x: torch.Tensor) -> torch.Tensor:
    """Evaluate a separable ``network`` (input ``x``) through the dispatcher."""
    return contract(network, {separable_plan(network).key: x}, "separable")  # type: ignore[union-attr]


register_strategy(
    "separable",
    contract_separable,
    "window sums Σ_o Π as small matrices on the data's axes, x read once (KFAC-reduce)",
    priority=5,
)

__all__ = ["SeparablePlan", "contract_separable", "separable_plan", "window_count_matrix", "window_sums"]
