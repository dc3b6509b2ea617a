"""Strategy ``"col2im"``: ``fold`` and ``unfold_transpose`` as strided adds, no dense ``Π``.

Both are networks ``t[…, o…, (k…)] Π[i, o, k]`` whose input positions ``i`` are open: every
``o`` (and tap ``k``) *writes* to position ``i = S·o + Dl·k − P``. For each tap combination
``k`` the written positions form a strided slice ``[Dl·k :: S]`` of a zero buffer padded by
``P`` (and up to the windows' footprint), so the network is ``∏K`` strided in-place adds
(``fold``: taps summed) or copies (``unfold_transpose``: taps open), then one crop:

- no multiplication at all, so a NaN/inf reaches exactly the outputs torch's ``fold`` gives
  it (``0·NaN`` never happens);
- no pattern tensor, so nothing of size ``I·O·K`` is ever built or cached (long 1-d folds).

A 2-d fold in torch's own layout and symmetric geometry is handed to
``torch.nn.functional.fold`` instead (the same adds in one kernel call: with two threads
the ``∏K`` separate adds each wait for the second thread, which on a loaded machine made
them 5× slower than torch's single parallel region).

A network qualifies when it has one data input and only patterns, each with ``o`` on the
data, ``i`` open, ``k`` either on the data (summed) or open, the other legs of the data all
open, and nothing sliced.

>>> import torch, tnconv
>>> u = torch.randn(1, 18, 9, dtype=torch.float64)
>>> tn = tnconv.networks.fold(u.shape, (5, 5), 3)
>>> torch.allclose(contract(tn, {"u": u}, "col2im"), torch.nn.functional.fold(u, (5, 5), 3))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..caching import cached
from ..spec.pattern import IndexPattern
from ..symbolic.network import TensorNetwork
from .dispatch import contract, register_strategy


@dataclass(frozen=True)
class Col2imPlan:
    """``data`` reshaped to ``data_shape`` (legs ``data_legs``); per pattern its legs and
    whether ``k`` is on the data; the buffer's legs (output legs, ``i`` padded)."""

    key: str
    data_shape: tuple[int, ...]
    data_legs: tuple[str, ...]
    patterns: tuple[tuple[str, str, str, IndexPattern, bool], ...]  # i, o, k, pattern, k on data
    out_legs: tuple[str, ...]
    output_shape: tuple[int, ...]


@cached(maxsize=1024)
def col2im_plan(network: TensorNetwork) -> Col2imPlan | None:
    """The plan if ``network`` is a fold / unfold of a transposed convolution's input, else ``None``."""
    if network.slices:
        return None
    inputs = [n for n in network.nodes if n.kind == "input"]
    others = [n for n in network.nodes if n.kind != "input"]
    if len(inputs) != 1 or not others or any(n.kind != "pattern" for n in others):
        return None
    data = inputs[0]
    legs, out = data.legs, network.output_legs
    if len(set(legs)) != len(legs) or len(set(out)) != len(out):
        return None
    patterns, pattern_legs = [], set()
    for node in others:
        i, o, k = node.legs
        if o not in legs or i in legs or i not in out or o in out:
            return None
        k_on_data = k in legs
        if k_on_data == (k in out):
            return None
        patterns.append((i, o, k, node.pattern, k_on_data))
        pattern_legs |= {i, o, k}
    if len(pattern_legs) != 3 * len(patterns):
        return None
    plain = [leg for leg in legs if leg not in pattern_legs]
    if any(leg not in out for leg in plain) or any(leg not in pattern_legs and leg not in legs for leg in out):
        return None
    shape = tuple(network.size(leg) for leg in legs)
    return Col2imPlan(data.key, shape, legs, tuple(patterns), out, network.output_shape)  # type: ignore[arg-type]


@cached(maxsize=1024)
def _torch_fold(plan: Col2imPlan):  # type: ignore[no-untyped-def]
    """``u -> F.fold(u, …)`` when the plan is a 2-d fold in torch's layout and geometry (one
    kernel call, one parallel region, where the strided adds are ``∏K``), else ``None``."""
    if len(plan.patterns) != 2 or not all(p[4] for p in plan.patterns) or len(plan.data_legs) != 6:
        return None
    (i1, o1, k1, p1, _), (i2, o2, k2, p2, _) = plan.patterns
    lead = plan.data_legs[:2]
    if plan.data_legs[2:] != (k1, k2, o1, o2) or plan.out_legs != (*lead, i1, i2):
        return None
    if any((p.input_size + 2 * p.padding - p.dilation * (p.kernel_size - 1) - 1) // p.stride + 1 != p.output_size
           for p in (p1, p2)):  # fmt: skip
        return None  # an asymmetric padding torch's fold cannot express
    n, c = plan.data_shape[:2]
    rows = (n, c * p1.kernel_size * p2.kernel_size, p1.output_size * p2.output_size)
    args = ((p1.input_size, p2.input_size), (p1.kernel_size, p2.kernel_size), (p1.dilation, p2.dilation),
            (p1.padding, p2.padding), (p1.stride, p2.stride))  # fmt: skip
    shape = plan.output_shape
    return lambda u: F.fold(u.reshape(rows), *args).reshape(shape)


def _span(p: IndexPattern) -> int:
    """Length of the padded buffer axis: the windows' footprint and the crop both fit."""
    footprint = p.stride * (p.output_size - 1) + p.dilation * (p.kernel_size - 1) + 1
    return max(footprint, p.padding + p.input_size)


def contract_col2im(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Strategy ``"col2im"``: strided adds into a padded zero buffer, then a crop."""
    plan = col2im_plan(network)
    if plan is None:
        return None
    if (kernel := _torch_fold(plan)) is not None:
        return kernel(tensors[plan.key])
    t = tensors[plan.key].reshape(plan.data_shape)
    by_i = {p[0]: p for p in plan.patterns}
    buffer_shape = [_span(by_i[leg][3]) if leg in by_i else network.size(leg) for leg in plan.out_legs]
    buffer = t.new_zeros(buffer_shape)
    # the data's axes, once the taps on it are selected: plain legs and o legs, in data order
    src_legs = [leg for leg in plan.data_legs if not any(leg == p[2] and p[4] for p in plan.patterns)]
    # the destination's axes after selecting open taps: plain legs and i legs (standing for o)
    dst_legs = [
        by_i[leg][1] if leg in by_i else leg for leg in plan.out_legs if not any(leg == p[2] for p in plan.patterns)
    ]
    order = [src_legs.index(leg) for leg in dst_legs]
    taps = [range(p[3].kernel_size) for p in plan.patterns]
    for offsets in itertools.product(*taps):
        tap = {p[2]: k for p, k in zip(plan.patterns, offsets)}
        src = t
        for axis in reversed(range(len(plan.data_legs))):
            leg = plan.data_legs[axis]
            if leg in tap:
                src = src.select(axis, tap[leg])
        dst = buffer
        for axis in reversed(range(len(plan.out_legs))):
            leg = plan.out_legs[axis]
            if leg in tap:
                dst = dst.select(axis, tap[leg])
            elif leg in by_i:
                _, _, k, p, _ = by_i[leg]
                start = p.dilation * tap[k]
                dst = dst.narrow(axis, start, p.stride * (p.output_size - 1) + 1)
                if p.stride > 1:
                    dst = dst[(slice(None),) * axis + (slice(None, None, p.stride),)]
        dst.add_(src.permute(order))
    for axis, leg in enumerate(plan.out_legs):
        if leg in by_i:
            p = by_i[leg][3]
            buffer = buffer.narrow(axis, p.padding, p.input_size)
    return buffer.reshape(plan.output_shape)


def col2im(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate a fold-like ``network`` by the ``"col2im"`` strategy."""
    return contract(network, tensors, "col2im")


register_strategy(
    "col2im",
    contract_col2im,
    "fold / unfold_transpose as strided adds into a padded buffer (no Π, NaN-exact)",
    priority=25,
)

__all__ = ["Col2imPlan", "col2im_plan", "contract_col2im"]
