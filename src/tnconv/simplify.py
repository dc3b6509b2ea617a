"""Rewrite rules of SPEC §5: ``network → network`` functions that keep the value.

Each rule is symbolic: it looks at node kinds, legs and index patterns, never at data.
:func:`simplify` applies them until nothing changes; the result is cached.
"""

from __future__ import annotations

from functools import lru_cache

from .network import TensorNetwork


def merge_identities(network: TensorNetwork) -> TensorNetwork:
    """Replace ``δ(a, b)`` by one leg for both, unless both legs are open.

    The merged leg takes the shorter name (``n`` rather than ``n'``), in the output too.
    """
    out = set(network.output_legs)
    slices = dict(network.slices)
    for node in network.nodes:
        if node.kind != "identity":
            continue
        a, b = node.legs
        if a in out and b in out:
            continue
        if slices.get(a) != slices.get(b):
            continue
        keep, drop = sorted((a, b), key=lambda leg: (len(leg), leg))
        mapping = {drop: keep}
        rest = tuple(n.renamed(mapping) for n in network.nodes if n is not node)
        output = tuple(tuple(mapping.get(leg, leg) for leg in axis) for axis in network.output)
        return merge_identities(network.with_nodes(rest, output=output))
    return network


RULES = (merge_identities,)


@lru_cache(maxsize=1024)
def simplify(network: TensorNetwork) -> TensorNetwork:
    """Apply every rule of :data:`RULES` until the network no longer changes."""
    previous = None
    while previous != network:
        previous = network
        for rule in RULES:
            network = rule(network)
    return network
