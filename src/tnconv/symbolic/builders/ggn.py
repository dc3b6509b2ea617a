"""Networks of the GGN diagonal and the GGN Gram matrix of a convolution's weight
(docs/reference.md §3): ``J = x Π s`` for ``M`` backpropagated loss-Hessian square-root
vectors ``s``, then ``Σ_{m,n} J ⊙ J`` or ``J · J'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...caching import cached
from ...spec.validation import IntOrTuple, Padding
from ..network import TensorNetwork
from ..squares import square_network
from .gradients import conv_for_output


@cached(maxsize=1024)
def _ggn_factor(conv: TensorNetwork, columns: int, merged: bool) -> TensorNetwork:
    """``J`` with output ``[m, n, (g co), ci, k…]`` (``[(m n), …]`` if ``merged``)."""
    mjp = conv.vjp("w", vector="s", batch=columns)
    lead = (("m", "n"),) if merged else (("m",), ("n",))
    return mjp.with_nodes(mjp.nodes, output=lead + mjp.output[1:])


def ggn_factor_network(
    x_shape: Sequence[int],
    s_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    merged: bool,
) -> TensorNetwork:
    conv = conv_for_output(x_shape, s_shape, "s", kernel_size, stride, padding, dilation, groups, lead=1)
    return _ggn_factor(conv, int(s_shape[0]), merged)


def _diagonal_axes(factor: TensorNetwork) -> tuple[int, ...]:
    return tuple(range(2, len(factor.output)))


def ggn_diagonal_network(
    x_shape: Sequence[int],
    s_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """``Σ_{m,n} (x Π s)[m,n] ⊙ (x' Π' s')[m,n]``: the GGN diagonal, shaped like the weight.

    Inputs ``x`` ``[N, C_in, I…]`` and ``s`` ``[M, N, C_out, O…]``.

    >>> import tnconv
    >>> tnconv.networks.ggn_diagonal((2, 3, 7), (5, 2, 4, 5), 3).output_shape
    (4, 3, 3)
    """
    conv = conv_for_output(x_shape, s_shape, "s", kernel_size, stride, padding, dilation, groups, lead=1)
    return ggn_diagonal_of(conv, int(s_shape[0]))


def ggn_gram_network(
    x_shape: Sequence[int],
    s_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """``(x Π s)[m,n,·] · (x' Π' s')[m',n',·]`` over all weight legs: ``[M·N, M·N]``.

    >>> import tnconv
    >>> tnconv.networks.ggn_gram((2, 3, 7), (5, 2, 4, 5), 3).output_shape
    (10, 10)
    """
    conv = conv_for_output(x_shape, s_shape, "s", kernel_size, stride, padding, dilation, groups, lead=1)
    return ggn_gram_of(conv, int(s_shape[0]))


@cached(maxsize=1024)
def ggn_diagonal_of(conv: TensorNetwork, columns: int) -> TensorNetwork:
    """The GGN-diagonal network of the convolution ``conv`` with ``columns`` vectors per sample."""
    factor = _ggn_factor(conv, columns, False)
    return square_network(factor, keep=_diagonal_axes(factor))


@cached(maxsize=1024)
def ggn_gram_of(conv: TensorNetwork, columns: int) -> TensorNetwork:
    """The GGN-Gram network of the convolution ``conv`` with ``columns`` vectors per sample."""
    return square_network(_ggn_factor(conv, columns, True), outer=(0,))
