"""The text written on diagrams: leg labels, node labels and scalar values, shared by the renderers.

>>> import tnconv
>>> tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
>>> [node_label(node) for node in tn.nodes], leg_label(tn, "o1", show_sizes=True)
(['x', 'Π₁', 'w'], 'o1=3')
"""

from __future__ import annotations

import re

from ..symbolic.network import Node, TensorNetwork

PATTERN_NAME = re.compile(r"^pi(\d*)('*)$")
"""An index pattern's name, ``pi<digits><primes>``: groups are the digits and the primes."""

_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def leg_label(network: TensorNetwork, leg: str, show_sizes: bool = False) -> str:
    """The text written next to ``leg``: its name, and ``=size`` with ``show_sizes``.

    >>> import tnconv
    >>> leg_label(tnconv.networks.conv((1, 2, 5), (3, 2, 3)), "o1", show_sizes=True)
    'o1=3'
    """
    return f"{leg}={network.size(leg)}" if show_sizes else leg


def scalar_text(value: float) -> str:
    """``1/648`` for the reciprocal of an integer (normalisations such as ``1/(N·|O|²)``), else ``0.25``.

    >>> scalar_text(1 / 648), scalar_text(2.5)
    ('1/648', '2.5')
    """
    if value != 0 and abs(1 / value - round(1 / value)) < 1e-9 * abs(1 / value) and abs(value) < 1:
        return f"{'-' if value < 0 else ''}1/{abs(round(1 / value))}"
    return f"{value:.4g}"


def node_label(node: Node) -> str:
    """A node's text in pictures: ``Π₁`` for pattern ``pi1``, ``δ``, ``1``, a scalar's value, else the name.

    >>> import tnconv
    >>> [node_label(node) for node in tnconv.networks.conv((1, 2, 5), (3, 2, 3)).nodes]
    ['x', 'Π₁', 'w']
    """
    if node.kind == "pattern":
        match = PATTERN_NAME.match(node.name)
        return "Π" + (match.group(1).translate(_SUBSCRIPTS) + match.group(2) if match else "")
    if node.kind == "identity":
        return "δ"
    if node.kind == "ones":
        return "1"
    if node.kind == "scalar":
        return "×" + scalar_text(node.value)
    if node.kind == "constant" and node.network is not None and node.network.nodes:
        return "Σ" + node_label(node.network.nodes[0])
    return node.name
