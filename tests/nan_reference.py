"""Which outputs torch's conventions make non-finite when some inputs are (a derived reference).

PyTorch pads explicitly: a padded position is a zero *operand*, and ``0·NaN = NaN``, so a
NaN in a weight reaches every output of its channel, padding taps included; but it never
multiplies data by the zeros of ``Π`` (positions outside a window). :func:`nonfinite_mask`
derives exactly that set for any network: every pattern is replaced by the unpadded one
on the explicitly padded input (its ``i`` leg grown by the padding on both sides), and an
output is marked when it depends structurally on a non-finite input entry — evaluated as
``f(1 + bad) − f(1) > 0`` with the dense reference on all-ones operands (padding included,
as torch's zeros are operands), which involves no NaN and no cancellation.

One deliberate difference from torch: kernel taps that read only padding (dilation 36 on a
16×16 map) are cut off by tnconv (strategy ``"trim"``), so they are no operands at all —
a NaN in such a weight tap reaches nothing, and output entries of such taps (weight VJP,
unfold, KFC) are exact zeros. Torch would spread ``0·NaN`` there.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from tnconv.simplify.taps import trim_taps
from tnconv.spec import IndexPattern
from tnconv.symbolic.network import TensorNetwork


def _padded(network: TensorNetwork):
    """The network on explicitly padded inputs, and ``{i leg: (left, right)}``."""
    grow, nodes = {}, []
    data_legs = {leg for n in network.nodes if n.kind == "input" for leg in n.legs}
    open_legs = set(network.output_legs)
    for node in network.nodes:
        # padding is an operand where it pads data (i on a data node) or is cropped off an
        # output (i open); an i summed inside a transposed unfold is the crop of an output
        # torch never computes: no operand there
        if node.kind == "pattern" and (node.legs[0] in data_legs or node.legs[0] in open_legs):
            p = node.pattern
            footprint = p.stride * (p.output_size - 1) + p.dilation * (p.kernel_size - 1) + 1
            right = max(0, footprint - p.padding - p.input_size)
            size = p.padding + p.input_size + right
            grow[node.legs[0]] = (p.padding, right)
            node = replace(node, pattern=IndexPattern(size, p.output_size, p.kernel_size, p.stride, p.dilation, 0))
        nodes.append(node)
    sizes = tuple((leg, s + sum(grow[leg]) if leg in grow else s) for leg, s in network.sizes)
    return TensorNetwork(tuple(nodes), sizes, network.output, network.slices), grow


def _outside_taps(shape_legs, full, cut) -> torch.Tensor:
    """Bool ``[full sizes of shape_legs]``: entries on a cut (padding-only) tap of some k leg."""
    mask = torch.zeros([full[leg] for leg in shape_legs], dtype=torch.bool)
    for dim, leg in enumerate(shape_legs):
        if leg in cut:
            start, length = cut[leg]
            keep = torch.ones(full[leg], dtype=torch.bool)
            keep[start : start + length] = False
            mask |= keep.view([-1 if d == dim else 1 for d in range(len(shape_legs))])
    return mask


def _pad(t: torch.Tensor, legs, full, grow, value: float) -> torch.Tensor:
    t = t.reshape([full[leg] for leg in legs])
    widths = []
    for leg in reversed(legs):
        widths += list(grow.get(leg, (0, 0)))
    return F.pad(t, widths, value=value)


def nonfinite_mask(network: TensorNetwork, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Bool tensor shaped like the network's result: where torch's conventions give inf/NaN."""
    padded, grow = _padded(network)
    full = network.size_of
    trim = trim_taps(network)
    cut = {}
    if trim is not None:
        patterns = [n for n in network.nodes if n.kind == "pattern"]
        k_legs = {n.legs[2] for n in patterns}
        cut = {leg: (start, length) for leg, start, length in trim.ranges if leg in k_legs}
    node_of = {n.key: n for n in network.nodes if n.kind == "input"}
    ones, hit = {}, {}
    for key, t in tensors.items():
        legs = node_of[key].legs
        bad = (~torch.isfinite(t)).reshape([full[leg] for leg in legs])
        bad = (bad & ~_outside_taps(legs, full, cut)).double()
        ones[key] = _pad(torch.ones_like(bad), legs, full, grow, 1.0).reshape(padded.input_shape(key))
        hit[key] = ones[key] + _pad(bad, legs, full, grow, 0.0).reshape(padded.input_shape(key))
    base = padded.contract(strategy="einsum", **ones)
    delta = padded.contract(strategy="einsum", **hit) - base
    marked = delta > 1e-9 * base.abs().clamp_min(1.0)
    out_legs = network.output_legs
    marked = marked.reshape([padded.size(leg) for leg in out_legs])
    for dim, leg in enumerate(out_legs):
        if leg in grow:
            marked = marked.narrow(dim, grow[leg][0], full[leg])
    marked = marked & ~_outside_taps(out_legs, full, cut)
    return marked.reshape(network.output_shape)


def square_nonfinite_mask(network, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mask of ``J · J'`` (a :class:`~tnconv.symbolic.squares.SquareNetwork`) as torch's
    recipe gives it — ``J`` materialised (:func:`nonfinite_mask`), then a dense product: an
    entry is non-finite when a row of ``J`` it multiplies has a non-finite entry."""
    factor = network.factor
    mask = nonfinite_mask(factor, tensors)
    axes = len(factor.output)
    summed = [a for a in range(axes) if a not in network.keep + network.outer]
    order = list(network.keep) + list(network.outer) + summed
    mask = mask.permute(order) if mask.dim() == axes else mask.reshape(factor.output_shape).permute(order)
    shape = [factor.output_shape[a] for a in order]
    keep = int(torch.tensor([shape[i] for i in range(len(network.keep))]).prod()) if network.keep else 1
    outer = int(torch.tensor([factor.output_shape[a] for a in network.outer]).prod()) if network.outer else 1
    rows = mask.reshape(keep, outer, -1).any(-1)
    if network.outer:
        return (rows[:, :, None] | rows[:, None, :]).reshape(network.output_shape)
    return rows.reshape(network.output_shape)
