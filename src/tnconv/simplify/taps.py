"""Kernel taps that never touch the input, trimmed symbolically.

Tap ``k`` of a pattern reads input ``S·o + Dl·k − P`` at window ``o``; when that is outside
``[0, I)`` for every window (dilation 36 on a 16×16 map, or padding as wide as the kernel's
reach), ``Π[:, :, k]`` is all zero and every term through that tap vanishes. Such taps form
a prefix and a suffix of ``0 … K−1`` (the touched taps are a run, up to a stride that skips
the whole input, for which the run's hull is kept), so they are cut off by shifting the
pattern: ``Π[i, o, a + k'] = Π'[i, o, k']`` with ``Π' = (I, O, K', S, Dl, P − Dl·a)``.
When the shifted padding ``P − Dl·a`` would be negative, the first ``c = Dl·a − P`` input
positions (which then no window reads) are cut off as well, so ``Π'`` keeps ``P ≥ 0``.

:func:`trim_taps` returns the network on the kept ranges (:class:`TapTrim`): the same nodes
and legs, the trimmed legs shorter. Data tensors carrying a trimmed leg are narrowed to its
range before the contraction; an output axis carrying one is zero outside it (the zero
blocks of the KFC and KFAC-reduce factors, of unfold and of the weight VJP). The
dispatcher's ``"trim"`` strategy (:mod:`tnconv.execute.trim`) does both. Pure and cached.

>>> import tnconv
>>> tn = tnconv.networks.unfold((1, 2, 16, 16), 3, dilation=36, padding=36)
>>> trim = trim_taps(tn)
>>> trim.network.output_shape, tn.output_shape         # only the centre tap reads the map
((1, 2, 256), (1, 18, 256))
>>> trim.ranges
(('k1', 1, 1), ('k2', 1, 1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..caching import cached
from ..spec.pattern import IndexPattern
from ..symbolic.network import Node, TensorNetwork
from ..symbolic.squares import SquareNetwork, square_network


@cached(maxsize=4096, bypassable=False)
def touched_taps(pattern: IndexPattern) -> tuple[int, int] | None:
    """``(first, last)`` of the taps that read some input position, ``None`` if none does.

    >>> touched_taps(IndexPattern(16, 16, 3, dilation=36, padding=36))
    (1, 1)
    >>> touched_taps(IndexPattern(8, 6, 3))
    (0, 2)
    """
    p = pattern
    touched = []
    for k in range(p.kernel_size):
        offset = p.dilation * k - p.padding  # input read by window 0
        first = max(0, -(offset // p.stride))  # smallest o with S·o + offset ≥ 0
        if first < p.output_size and p.stride * first + offset < p.input_size:
            touched.append(k)
    return (touched[0], touched[-1]) if touched else None


@dataclass(frozen=True)
class TapTrim:
    """A network restricted to the taps (and input positions) that matter.

    Attributes:
        network: the trimmed network: same nodes and legs, trimmed legs shorter, patterns
            shifted.
        ranges: ``(leg, start, length)`` of every trimmed leg, a run of its full range.
        original: the network it was trimmed from.
        inputs: per data tensor that carries a trimmed leg, ``(key, legs, narrows, shape)``:
            reshape it to one dimension per leg (``legs``, full sizes), narrow each
            ``(dim, start, length)`` of ``narrows``, reshape to ``shape`` (the trimmed node's).
        output: ``(legs, narrows)``: the full output with one dimension per leg and the
            narrows where the trimmed network's result goes (empty: same output shape).
    """

    network: TensorNetwork
    ranges: tuple[tuple[str, int, int], ...]
    original: TensorNetwork
    inputs: tuple[tuple[str, tuple[int, ...], tuple[tuple[int, int, int], ...], tuple[int, ...]], ...] = ()
    output: tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]] = ((), ())

    @property
    def work_fraction(self) -> float:
        """``∏`` kept / full length of the trimmed legs of the first copy (``k``, ``i``): the
        fraction of taps (× positions) left, e.g. ``1/9`` for a 3×3 kernel cut to its centre."""
        full = dict(self.original.sizes)
        legs = [(leg, length) for leg, _, length in self.ranges if "'" not in leg]
        return math.prod(length / full[leg] for leg, length in legs)


def _same_kernel(node: Node, pattern: IndexPattern, leg: str) -> bool:
    """Whether ``node`` is a pattern equal to ``pattern`` with ``leg`` as its kernel leg: it is
    trimmed to the same range, so the two may share the leg."""
    return node.kind == "pattern" and node.pattern == pattern and node.legs[2] == leg


def _shift(network: TensorNetwork, node: Node) -> tuple[Node, dict[str, tuple[int, int, int]]] | None:
    """The pattern node on its touched taps (and reached inputs), and ``{leg: (start, length, full)}``."""
    p: IndexPattern = node.pattern  # type: ignore[assignment]
    hull = touched_taps(p)
    if hull is None or hull == (0, p.kernel_size - 1):
        return None
    first, last = hull
    padding = p.padding - p.dilation * first
    crop = max(0, -padding)
    shifted = IndexPattern(p.input_size - crop, p.output_size, last - first + 1, p.stride, p.dilation, padding + crop)
    i, _, k = node.legs
    ranges = {k: (first, shifted.kernel_size, p.kernel_size)}
    if crop:
        ranges[i] = (crop, shifted.input_size, p.input_size)
    for leg in ranges:  # a trimmed leg must be carried by data (narrowed), be open, or be the
        # kernel leg of an identical pattern (the second copy of a fused square), nothing else
        others = (n for n in network.nodes if n is not node and leg in n.legs and n.kind != "input")
        if not all(_same_kernel(n, p, leg) for n in others):
            return None
    return replace(node, pattern=shifted), ranges


def _generic(network: TensorNetwork) -> TapTrim | None:
    sliced = {leg for leg, _ in network.slices}
    nodes, ranges = [], {}
    for node in network.nodes:
        shifted = None
        if node.kind == "pattern" and not set(node.legs) & sliced:
            shifted = _shift(network, node)
        if shifted is None or any(ranges.get(leg, cut) != cut for leg, cut in shifted[1].items()):
            nodes.append(node)
            continue
        nodes.append(shifted[0])
        ranges.update(shifted[1])
    if not ranges:
        return None
    sizes = tuple((leg, ranges[leg][1] if leg in ranges else size) for leg, size in network.sizes)
    trimmed = TensorNetwork(tuple(nodes), sizes, network.output, network.slices)
    full = dict(network.sizes)

    def narrows(legs: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
        return tuple((dim, ranges[leg][0], ranges[leg][1]) for dim, leg in enumerate(legs) if leg in ranges)

    inputs: dict[str, tuple] = {}
    for node in trimmed.nodes:
        if node.kind != "input":
            continue
        shape = tuple(math.prod(trimmed.size_of[leg] for leg in axis) for axis in node.axes)
        plan = (node.key, tuple(full[leg] for leg in node.legs), narrows(node.legs), shape)
        if inputs.setdefault(node.key, plan) != plan:
            return None  # two readers of one tensor would need different cuts
    kept = tuple(plan for plan in inputs.values() if plan[2])
    out_legs = network.output_legs
    output = (tuple(network.size(leg) for leg in out_legs), narrows(out_legs))
    ranges_t = tuple((leg, start, length) for leg, (start, length, _) in ranges.items())
    return TapTrim(trimmed, ranges_t, network, kept, output)


@cached(maxsize=1024)
def trim_taps(network: TensorNetwork) -> TapTrim | None:
    """``network`` on the taps that read the input (see the module docstring), or ``None``
    when every tap of every (unsliced) pattern does.

    A :class:`~tnconv.symbolic.squares.SquareNetwork` (KFC, KFAC-reduce, …) stays one: its
    factor ``J`` is trimmed and squared again, so the ``"square"`` strategy still sees it.
    """
    trim = _generic(network)
    if trim is None or not isinstance(network, SquareNetwork) or network.factor is None:
        return trim
    factor = _generic(network.factor)
    if factor is None:
        return trim
    squared = square_network(factor.network, network.keep, network.outer, network.scale)
    generic = trim.network
    if (squared.nodes, squared.sizes, squared.output, squared.slices) != (
        generic.nodes,
        generic.sizes,
        generic.output,
        generic.slices,
    ):
        return trim  # the copies were trimmed differently: contract the plain network
    return replace(trim, network=squared)


__all__ = ["TapTrim", "touched_taps", "trim_taps"]
