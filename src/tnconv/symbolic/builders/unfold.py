"""Unfold (im2col), fold (col2im) and the unfold of a transposed convolution's input, as
networks (docs/reference.md §3). :func:`patches_network` is the one builder behind them and
behind the Kronecker input factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...caching import cached
from ...spec.geometry import ConvGeometry, conv_geometry, conv_transpose_geometry
from ...spec.validation import IntOrTuple, Padding, normalize_tuple
from ..derive import merge_identities
from ..network import Axes, Node, TensorNetwork
from .conv import pattern_nodes, pattern_sizes, spatial_legs


@cached(maxsize=1024)
def patches_network(
    batch: int, channels: int, geometry: ConvGeometry, transposed: bool = False, groups: int | None = None
) -> TensorNetwork:
    """The unfolded input ``x[n, c, i] Π[i, o, k]`` (windows ``o``), or, ``transposed``, that of a
    transposed convolution ``x[n, c, o] Π[i, o, k]`` (windows ``i``): the one builder behind
    unfold, fold and the Kronecker input factors.

    Without ``groups``: ``x[n, c, …]`` and output ``[n, (c k…), (windows…)]``, unfold's layout.
    With ``groups``: channels split as ``(g ci)`` and output ``[n, g, (ci k…), (windows…)]``.

    >>> from tnconv.spec import conv_geometry
    >>> patches_network(2, 6, conv_geometry((5, 5), 3), groups=3).output_shape
    (2, 3, 18, 9)
    """
    dims = geometry.dims
    i, o, k = spatial_legs("i", dims), spatial_legs("o", dims), spatial_legs("k", dims)
    data, windows = (o, i) if transposed else (i, o)
    if groups is None:
        channel_axis: tuple[str, ...] = ("c",)
        sizes = {"n": batch, "c": channels}
        output: Axes = (("n",), ("c",) + k, windows)
    else:
        channel_axis = ("g", "ci")
        sizes = {"n": batch, "g": groups, "ci": channels // groups}
        output = (("n",), ("g",), ("ci",) + k, windows)
    x_axes: Axes = (("n",), channel_axis) + tuple((leg,) for leg in data)
    nodes = (Node("x", "input", x_axes),) + pattern_nodes(geometry)
    return TensorNetwork(nodes, tuple({**sizes, **pattern_sizes(geometry)}.items()), output)


def _batch_and_channels(shape: Sequence[int], name: str, dims: int | None = None) -> tuple[int, int, tuple[int, ...]]:
    shape = tuple(shape)
    if len(shape) < 3 or (dims is not None and len(shape) != dims + 2):
        want = "at least 3" if dims is None else str(dims + 2)
        raise ValueError(f"{name} must have shape [N, C, I_1, ...] ({want} dimensions), got {shape}")
    return shape[0], shape[1], shape[2:]


@cached(maxsize=4096)
def unfold_network(
    input_shape: Sequence[int],
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
) -> TensorNetwork:
    """The unfold (im2col) network ``x[n, c, i] Π[i, o, k]`` with output ``[N, C·∏K, ∏O]``.

    Args:
        input_shape: ``[N, C, I_1, …, I_D]``.
        kernel_size, dilation, padding, stride: as ``torch.nn.functional.unfold``, any D.

    >>> unfold_network((1, 2, 5, 5), 3).output_shape
    (1, 18, 9)
    """
    batch, channels, sizes = _batch_and_channels(input_shape, "input")
    geometry = conv_geometry(sizes, kernel_size, stride, padding, dilation)
    return patches_network(batch, channels, geometry, False)


@cached(maxsize=1024)
def fold_of(unfold: TensorNetwork) -> TensorNetwork:
    """The fold network of an unfold network: its VJP w.r.t. ``x`` with the vector ``u``."""
    return merge_identities(unfold.vjp("x", vector="u"))


@cached(maxsize=4096)
def fold_network(
    input_shape: Sequence[int],
    output_size: IntOrTuple,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
) -> TensorNetwork:
    """The fold (col2im) network: the adjoint of unfold, ``u[n, (c k), (o)] Π[i, o, k]``.

    Derived from :func:`unfold_network` as ``.vjp("x", vector="u")`` (identities merged).

    Args:
        input_shape: ``[N, C·∏K, L]`` with ``L = ∏O`` the number of windows.
        output_size: the spatial size ``[I_1, …, I_D]`` of the folded result (an int means
            the same size in every dimension). D is the length of the first tuple among
            ``kernel_size, dilation, padding, stride, output_size``, else 2 (as torch).
        kernel_size, dilation, padding, stride: as ``torch.nn.functional.fold``.

    Returns:
        A network with input ``u`` and output ``[N, C, I_1, …, I_D]``.

    >>> tn = fold_network((1, 18, 9), (5, 5), 3)
    >>> tn.inputs, tn.output_shape
    (('u',), (1, 2, 5, 5))
    """
    dims = _spatial_dims((kernel_size, dilation, padding, stride, output_size), 2)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input must have shape [N, C*prod(kernel_size), L] (3 dimensions), got {shape}")
    sizes = normalize_tuple(output_size, dims, "output_size", minimum=1)
    kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    taps = math.prod(kernel)
    if shape[1] % taps:
        raise ValueError(
            f"input has {shape[1]} rows, which is not a multiple of prod(kernel_size)={taps} (kernel_size={kernel})"
        )
    geometry = conv_geometry(sizes, kernel, stride, padding, dilation)
    blocks = math.prod(geometry.output_size)
    if shape[2] != blocks:
        raise ValueError(
            f"input has {shape[2]} columns but output_size={sizes} with kernel_size={kernel}, dilation={dilation}, "
            f"padding={padding}, stride={stride} has {blocks} sliding blocks {geometry.output_size}"
        )
    return fold_of(patches_network(shape[0], shape[1] // taps, geometry, False))


@cached(maxsize=4096)
def unfold_transpose_network(
    input_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
) -> TensorNetwork:
    """The unfolded input of a transposed convolution, ``x[n, c, o] Π[i, o, k] → [N, C·∏K, ∏I']``.

    ``Π`` is that of the convolution mapping the transposed convolution's output size ``I'``
    to its input size ``O`` (docs/reference.md §3).

    Args:
        input_shape: the transposed convolution's input ``[N, C_in, O_1, …, O_D]``.
        kernel_size, stride, padding, output_padding, dilation: as
            ``torch.nn.functional.conv_transpose2d``.

    >>> unfold_transpose_network((1, 2, 4), 3, stride=2).output_shape
    (1, 6, 9)
    """
    batch, channels, sizes = _batch_and_channels(input_shape, "input")
    geometry = conv_transpose_geometry(sizes, kernel_size, stride, padding, output_padding, dilation)
    return patches_network(batch, channels, geometry, True)


def _spatial_dims(arguments: Sequence[object], default: int) -> int:
    """The number of spatial dimensions: the length of the first tuple argument, else ``default``."""
    for value in arguments:
        if isinstance(value, (Sequence, torch.Size)) and not isinstance(value, str):
            return len(value)
    return default
