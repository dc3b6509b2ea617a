"""Rewrite rules of docs/reference.md §5: ``network → network`` functions that keep the value.

Each rule is symbolic: it looks at node kinds, legs and index patterns, never at data.
:func:`simplify` applies them until nothing changes; the result is cached. Every rule is
tested against the dense evaluation of the unsimplified network.

================================  ===========================================================
rule                              effect
================================  ===========================================================
:func:`merge_identities`          ``δ(a, b)`` disappears; ``a`` and ``b`` become one leg
:func:`split_non_overlapping`     windows that tile the input (``S = K``, ``Dl = 1``, no padding,
                                  ``I = S·O``): ``i`` becomes ``(o, s)`` on the data, Π the
                                  identity ``δ(s, k)``
:func:`patterns_to_identities`    Π that is a bijection of two legs (``K = 1, S = 1``: ``δ(i,o)``;
                                  ``O = 1, I = K``: ``δ(i,k)``) becomes an identity
:func:`trim_untouched_inputs`     input positions no window reads are sliced away
:func:`precontract_constants`     a data-independent node whose summed leg no data node
                                  touches is pre-contracted (``Σ_o Π[i,o,k]`` in KFAC-reduce)
:func:`squeeze_size_one`          legs of size 1 vanish (shapes of data and output unchanged)
================================  ===========================================================
"""

from __future__ import annotations

from dataclasses import replace

from ..spec.pattern import IndexPattern
from ..symbolic.derive import merge_identities
from ..symbolic.network import Node, TensorNetwork

DATA_INDEPENDENT = ("pattern", "identity", "constant")


def _fresh_leg(base: str, network: TensorNetwork) -> str:
    taken = set(network.legs) | set(dict(network.sizes))
    leg = base
    while leg in taken:
        leg += "'"
    return leg


def _sliced(network: TensorNetwork, node: Node) -> bool:
    sliced = dict(network.slices)
    return any(leg in sliced for leg in node.legs)


def _replace(network: TensorNetwork, old: Node, new: tuple[Node, ...], dropped: tuple[str, ...] = ()) -> TensorNetwork:
    """Swap ``old`` for ``new``; a dropped size-1 leg still open in the output gets a ones node."""
    nodes = [n for n in network.nodes if n is not old] + list(new)
    carried = {leg for n in nodes for leg in n.legs}
    for leg in dropped:
        if leg in network.output_legs and leg not in carried:
            nodes.append(Node(f"ones_{leg}", "ones", ((leg,),)))
    return network.with_nodes(nodes)


def patterns_to_identities(network: TensorNetwork) -> TensorNetwork:
    """Rule 2: ``K = 1, S = 1``, no padding, ``I = O`` ⇒ ``Π = δ(i, o)`` (``k`` has size 1);
    likewise ``O = 1``, ``Dl = 1``, no padding, ``I = K`` ⇒ ``Π = δ(i, k)``."""
    for node in network.nodes:
        if node.kind != "pattern" or _sliced(network, node):
            continue
        p: IndexPattern = node.pattern  # type: ignore[assignment]
        i, o, k = node.legs
        if p.is_identity:
            pair, dropped = (i, o), k
        elif p.output_size == 1 and p.dilation == 1 and p.padding == 0 and p.input_size == p.kernel_size:
            pair, dropped = (i, k), o
        else:
            continue
        if all(leg in network.output_legs for leg in pair):
            continue
        identity = Node(f"delta_{node.name}", "identity", ((pair[0],), (pair[1],)))
        return patterns_to_identities(_replace(network, node, (identity,), (dropped,)))
    return network


def split_non_overlapping(network: TensorNetwork) -> TensorNetwork:
    """Rule 1: windows that tile the input (``S = K``, ``Dl = 1``, no padding, ``I = S·O``): ``i ≅ (o, s)``.

    Every data node carrying ``i`` sees it as the row-major pair ``(o, s)`` — a reshape —
    and Π shrinks to the selector ``Π'[s, ·, k] = [s = Dl·k]`` of shape ``[S, 1, K]``.
    """
    out = set(network.output_legs)
    for node in network.nodes:
        if node.kind != "pattern" or _sliced(network, node):
            continue
        p: IndexPattern = node.pattern  # type: ignore[assignment]
        i, o, k = node.legs
        if not p.is_non_overlapping or p.input_size != p.stride * p.output_size or p.is_identity or i in out:
            continue
        if p.stride != p.kernel_size or p.dilation != 1:
            # windows with gaps: the selector would be a dense 0/1 matrix multiplying the data
            # (0·NaN = NaN reaching outputs torch leaves finite); strided views read them instead
            continue
        carriers = [n for n in network.nodes if n is not node and i in n.legs]
        if not carriers or any(n.kind != "input" or o in n.legs for n in carriers):
            continue
        s, z = _fresh_leg(f"s{i[1:]}", network), _fresh_leg(f"z{i[1:]}", network)
        split = {n.name: n.renamed({}) for n in carriers}
        for name, n in split.items():
            axes = tuple(tuple(x for leg in axis for x in ((o, s) if leg == i else (leg,))) for axis in n.axes)
            split[name] = replace(n, axes=axes)
        selector = Node(
            node.name, "pattern", ((s,), (z,), (k,)), pattern=IndexPattern(p.stride, 1, p.kernel_size, 1, p.dilation, 0)
        )
        nodes = [selector if n is node else split.get(n.name, n) if n in carriers else n for n in network.nodes]
        extra = {s: p.stride, z: 1}
        return split_non_overlapping(network.with_nodes(nodes, extra_sizes=extra))
    return network


def trim_untouched_inputs(network: TensorNetwork) -> TensorNetwork:
    """Rule 3: slice away trailing input positions that no window reads."""
    out = set(network.output_legs)
    for node in network.nodes:
        if node.kind != "pattern" or _sliced(network, node):
            continue
        p: IndexPattern = node.pattern  # type: ignore[assignment]
        i = node.legs[0]
        last = min(p.input_size - 1, p.input_index(p.output_size - 1, p.kernel_size - 1))
        if i in out or not 0 <= last < p.input_size - 1:  # last < 0: Π is all zeros, leave it
            continue
        return trim_untouched_inputs(network.slice(i, range(last + 1)))
    return network


def precontract_constants(network: TensorNetwork) -> TensorNetwork:
    """Rule 4: pre-contract a data-independent node with the ones nodes on its private legs.

    A leg that is summed (not open) and carried, besides one pattern/identity/constant
    node, only by all-ones vectors is summed out once, symbolically: the node becomes a
    ``"constant"`` node whose value is cached per dtype and device.
    """
    out = set(network.output_legs)
    slices = dict(network.slices)
    for node in network.nodes:
        if node.kind not in DATA_INDEPENDENT:
            continue
        summed, ones = set(), []
        for leg in node.legs:
            others = [n for n in network.nodes if n is not node and leg in n.legs]
            if leg not in out and all(n.kind == "ones" for n in others):
                summed.add(leg)
                ones += others
        if not summed:
            continue
        kept = tuple((leg,) for leg in node.legs if leg not in summed)
        sub_nodes = (node, *ones)
        sizes = dict(network.sizes)
        legs = {leg for n in sub_nodes for leg in n.legs}
        sub = TensorNetwork(
            sub_nodes,
            tuple((leg, sizes[leg]) for leg in legs),
            kept,
            tuple((leg, slices[leg]) for leg in summed if leg in slices),
        )
        constant = Node(f"sum_{node.name}", "constant", kept, network=sub)
        rest = [n for n in network.nodes if n is not node and not any(n is o for o in ones)] + [constant]
        return precontract_constants(network.with_nodes(rest))
    return network


def squeeze_size_one(network: TensorNetwork) -> TensorNetwork:
    """Rule 5: drop unsliced legs of size 1 (``g`` without groups, ``k`` of a 1×1 kernel).

    Data tensors and the output keep their shapes: an axis whose legs all vanish has size 1.
    Legs of patterns and constants stay (their dense tensors have fixed dimensions); identity
    and ones nodes left without legs are dropped.
    """
    sliced = dict(network.slices)
    fixed = {leg for n in network.nodes if n.kind in ("pattern", "constant") for leg in n.legs}
    gone = {leg for leg, size in network.sizes if size == 1 and leg not in fixed and leg not in sliced}
    gone &= set(network.legs)
    if not gone:
        return network
    nodes = []
    for node in network.nodes:
        if node.kind in ("identity", "ones") and set(node.legs) & gone:
            continue  # δ(a, b) and ones over a size-1 leg are the number 1
        axes = tuple(tuple(leg for leg in axis if leg not in gone) for axis in node.axes)
        nodes.append(replace(node, axes=axes) if axes != node.axes else node)
    output = tuple(tuple(leg for leg in axis if leg not in gone) for axis in network.output)
    return network.with_nodes(nodes, output=output)


#: The rules in the order :func:`tnconv.simplify.simplify` applies them, until nothing changes.
RULES = (
    merge_identities,
    split_non_overlapping,
    patterns_to_identities,
    trim_untouched_inputs,
    precontract_constants,
    squeeze_size_one,
)
