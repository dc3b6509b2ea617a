"""Derived networks: Jacobians, VJPs and JVPs of a network, identities merged.

Every derivative in tnconv is one of these networks (docs/reference.md §4): the VJP w.r.t.
an input removes its node and attaches a vector to the output legs; the JVP replaces the
node by a tangent. :func:`merge_identities` removes the Kronecker deltas that
differentiation leaves behind; it is also the first rewrite rule of :mod:`tnconv.simplify`.
Only identities are merged here: the other rules change legs, and deriving again from such
a form would describe a restricted tensor.
"""

from __future__ import annotations

from ..caching import cached
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


def _fresh_name(base: str, network: TensorNetwork) -> str:
    taken = {node.name for node in network.nodes} | set(network.inputs)
    name = base
    while name in taken:
        name += "'"
    return name


@cached(maxsize=2048)
def vjp_network(network: TensorNetwork, wrt: str, batch: int | None = None) -> tuple[TensorNetwork, str]:
    """The VJP network of ``network`` w.r.t. input ``wrt`` (identities merged) and its vector's name.

    The vector is called ``"v"`` unless the network already has a node of that name (then
    ``"v'"``, …). With ``batch``, the vector and the result carry a leading leg ``m`` of
    that size (a matrix-Jacobian product).

    >>> import tnconv
    >>> tn, vector = vjp_network(tnconv.networks.conv((2, 3, 8), (4, 3, 3)), "w")
    >>> vector, tn.inputs, tn.output_shape
    ('v', ('x', 'v'), (4, 3, 3))
    """
    vector = _fresh_name("v", network)
    return merge_identities(network.vjp(wrt, vector=vector, batch=batch)), vector


@cached(maxsize=2048)
def jvp_network(network: TensorNetwork, wrt: str, batch: int | None = None) -> tuple[TensorNetwork, str]:
    """The JVP network of ``network`` w.r.t. input ``wrt`` (identities merged) and its tangent's name
    (``wrt + "_dot"``, primed if taken); ``batch`` as in :func:`vjp_network`.

    >>> import tnconv
    >>> tn, tangent = jvp_network(tnconv.networks.conv((2, 3, 8), (4, 3, 3)), "x", batch=5)
    >>> tangent, tn.inputs, tn.output_shape
    ('x_dot', ('x_dot', 'w'), (5, 2, 4, 6))
    """
    tangent = _fresh_name(f"{wrt}_dot", network)
    return merge_identities(network.jvp(wrt, tangent=tangent, batch=batch)), tangent
