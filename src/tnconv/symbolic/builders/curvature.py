"""Networks of the Kronecker input factors: KFC / KFAC-expand and KFAC-reduce, also of
transposed convolutions (docs/reference.md §3). Each is ``scale · J · J'`` of the unfolded
input ``J`` (summed over positions first for KFAC-reduce), a
:class:`~tnconv.symbolic.squares.SquareNetwork`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...caching import cached
from ...spec.geometry import conv_geometry, conv_transpose_geometry
from ...spec.validation import IntOrTuple, Padding, normalize_groups
from ..network import TensorNetwork
from ..squares import square_network
from .unfold import patches_network


def _check_input_shape(x_shape: Sequence[int], name: str = "x_shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 3:
        raise ValueError(f"{name} must have shape [N, C_in, I_1, ...] (at least 3 dimensions), got {shape}")
    return shape


@cached(maxsize=1024)
def input_patches(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The unfolded input ``x[n,g,ci,i] Π[i,o,k]`` as the convolution's network without ``w``.

    Output axes ``[n, g, (ci k1 … kD), (o1 … oD)]``: ``[N, G, C_in/G·∏K, ∏O]``. Built (and
    validated) once per signature: a repeated call of a front-end skips both.
    """
    x_shape = _check_input_shape(x_shape)
    groups = normalize_groups(groups, x_shape[1])
    geometry = conv_geometry(x_shape[2:], kernel_size, stride, padding, dilation)
    return patches_network(x_shape[0], x_shape[1], geometry, groups=groups)


@cached(maxsize=1024)
def input_patches_transpose(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The unfolded input of a transposed convolution, ``x[n,g,ci,o] Π[i,o,k]``.

    ``x`` is the transposed convolution's input ``[N, C_in, O_1, …]``; ``Π`` belongs to the
    convolution that maps ``I'`` (the transposed convolution's output size) to ``O``.
    Output axes ``[n, g, (ci k1 … kD), (i1 … iD)]``: ``[N, G, C_in/G·∏K, ∏I']``.
    """
    x_shape = _check_input_shape(x_shape)
    dims = len(x_shape) - 2
    groups = normalize_groups(groups, x_shape[1])
    geometry = conv_transpose_geometry(x_shape[2:], kernel_size, stride, padding, output_padding, dilation, dims)
    return patches_network(x_shape[0], x_shape[1], geometry, transposed=True, groups=groups)


def _positions(patches: TensorNetwork) -> int:
    return math.prod(patches.size(leg) for leg in patches.output[3])


@cached(maxsize=1024)
def _square_base(patches: TensorNetwork, approx: str) -> tuple[TensorNetwork, float]:
    """``J`` and the scale of the factor ``scale · J J'``: ``J = u`` (expand) or ``Σ_o u`` (reduce)."""
    batch = patches.size("n")
    if approx == "expand":
        return patches, 1.0 / batch
    summed = patches.with_nodes(patches.nodes, output=patches.output[:3])
    return summed, 1.0 / (batch * _positions(patches) ** 2)


@cached(maxsize=1024)
def feature_sum_network(patches: TensorNetwork) -> TensorNetwork:
    """``Σ_{n,o} u`` of a grouped patches network: ``[G, C_in/G·∏K]`` (the bias row of a factor)."""
    return patches.with_nodes(patches.nodes, output=patches.output[1:3])


def factor_network(patches: TensorNetwork, approx: str) -> TensorNetwork:
    """The input factor of a grouped patches network (``approx``: ``"expand"`` or ``"reduce"``)."""
    base, scale = _square_base(patches, approx)
    return square_network(base, keep=(1,), outer=(2,), scale=scale)


def kfc_network(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """KFC / KFAC-expand input factor ``(1/N)·x[n,g,ci,i]Π[i,o,k]·x[n,g,ci',i']Π[i',o,k']``.

    Output ``[G, C_in/G·∏K, C_in/G·∏K]``; the only input is ``x``.

    >>> import tnconv
    >>> tnconv.networks.kfc((2, 4, 5, 5), 3, groups=2).output_shape
    (2, 18, 18)
    """
    return factor_network(input_patches(x_shape, kernel_size, stride, padding, dilation, groups), "expand")


def kfac_reduce_network(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """KFAC-reduce input factor ``(1/(N|O|²))·x[n,g,ci,i]Π[i,o,k]·x[n,g,ci',i']Π[i',o',k']``.

    Output ``[G, C_in/G·∏K, C_in/G·∏K]``; the only input is ``x``.

    >>> import tnconv
    >>> tnconv.networks.kfac_reduce((2, 3, 6), 2, stride=2).output_shape
    (1, 6, 6)
    """
    return factor_network(input_patches(x_shape, kernel_size, stride, padding, dilation, groups), "reduce")


def kfc_transpose_network(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """KFC input factor of a transposed convolution (positions: its ``I'`` output positions).

    >>> import tnconv
    >>> tnconv.networks.kfc_transpose((2, 3, 4), 3, stride=2).output_shape
    (1, 9, 9)
    """
    patches = input_patches_transpose(x_shape, kernel_size, stride, padding, output_padding, dilation, groups)
    return factor_network(patches, "expand")


def kfac_reduce_transpose_network(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """KFAC-reduce input factor of a transposed convolution (normalised by ``N·|I'|²``).

    >>> import tnconv
    >>> tnconv.networks.kfac_reduce_transpose((2, 4, 4, 4), 2, stride=2, groups=2).output_shape
    (2, 8, 8)
    """
    patches = input_patches_transpose(x_shape, kernel_size, stride, padding, output_padding, dilation, groups)
    return factor_network(patches, "reduce")
