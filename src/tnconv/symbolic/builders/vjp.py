"""VJP networks of the convolution, derived from its network (docs/reference.md §3, §4).

``conv_network(...).vjp("x")`` / ``.vjp("w")``, identities merged; with ``batch``, the
vector carries a leading leg ``m`` (many products in one contraction).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...caching import cached
from ...spec.validation import IntOrTuple, Padding
from ..derive import vjp_network
from ..network import TensorNetwork
from .conv import conv_network


@cached(maxsize=4096)
def conv_input_vjp_network(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    batch: int | None = None,
) -> TensorNetwork:
    """The input VJP's network ``v[(m), n, (g co), o] Π[i, o, k] w[(g co), ci, k]``.

    Derived as ``conv_network(...).vjp("x")`` (identities merged). Inputs ``w`` and ``v``
    (``[N, C_out, O…]``, or ``[batch, N, C_out, O…]`` with ``batch``); output shaped like
    the convolution's input (with the leading ``batch``).

    >>> tn = conv_input_vjp_network((2, 3, 8), (4, 3, 3), batch=5)
    >>> tn.inputs, tn.input_shape("v"), tn.output_shape
    (('w', 'v'), (5, 2, 4, 6), (5, 2, 3, 8))
    """
    network = conv_network(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups)
    return vjp_network(network, "x", batch)[0]


@cached(maxsize=4096)
def conv_weight_vjp_network(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    batch: int | None = None,
) -> TensorNetwork:
    """The weight VJP's network ``x[n, (g ci), i] Π[i, o, k] v[(m), n, (g co), o]``.

    Derived as ``conv_network(...).vjp("w")`` (identities merged). Inputs ``x`` and ``v``; output
    shaped like the weight (with a leading ``batch``).

    >>> conv_weight_vjp_network((2, 3, 8), (4, 3, 3)).output_shape
    (4, 3, 3)
    """
    network = conv_network(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups)
    return vjp_network(network, "w", batch)[0]
