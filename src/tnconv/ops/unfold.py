"""Unfolding (im2col), folding (col2im) and the unfolded input of a transposed convolution.

SPEC §3: ``unfold = x[n, c, i] Π[i, o, k] → [n, (c k), (o)]``; ``fold`` is its adjoint,
derived as ``unfold_network(...).vjp("x", vector="u")``; the transposed convolution's
unfold ``x[n, c, o] Π[i, o, k] → [n, (c k), (i)]`` uses the Π of the convolution that maps
``I'`` to ``O`` (:func:`~tnconv.hyperparams.conv_transpose_geometry`). Layouts are
``torch.nn.functional.unfold``/``fold``'s: channel-major, then kernel position, then the
flattened window positions, for any number of spatial dimensions.

Example:
    >>> import torch, tnconv
    >>> x = torch.randn(2, 3, 6, 6)
    >>> u = tnconv.unfold(x, 3, padding=1)
    >>> u.shape, torch.allclose(u, torch.nn.functional.unfold(x, 3, padding=1))
    (torch.Size([2, 27, 36]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from ..autodiff import contract
from ..caching import symbolic_cache
from ..hyperparams import (
    ConvGeometry,
    IntOrTuple,
    Padding,
    check_tensor,
    conv_geometry,
    conv_transpose_geometry,
    normalize_tuple,
)
from ..network import Axes, Node, TensorNetwork
from ..simplify import merge_identities
from .conv import pattern_nodes, pattern_sizes, spatial_legs


@lru_cache(maxsize=1024)
def patches_network(
    batch: int, channels: int, geometry: ConvGeometry, transposed: bool = False, groups: int | None = None
) -> TensorNetwork:
    """The unfolded input ``x[n, c, i] Π[i, o, k]`` (windows ``o``), or, ``transposed``, that of a
    transposed convolution ``x[n, c, o] Π[i, o, k]`` (windows ``i``): the one builder behind
    unfold, fold and the Kronecker input factors.

    Without ``groups``: ``x[n, c, …]`` and output ``[n, (c k…), (windows…)]``, unfold's layout.
    With ``groups``: channels split as ``(g ci)`` and output ``[n, g, (ci k…), (windows…)]``.

    >>> from tnconv.hyperparams import conv_geometry
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


@symbolic_cache
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


@lru_cache(maxsize=1024)
def _fold_network(unfold: TensorNetwork) -> TensorNetwork:
    return merge_identities(unfold.vjp("x", vector="u"))


@symbolic_cache
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
    return _fold_network(patches_network(shape[0], shape[1] // taps, geometry, False))


@symbolic_cache
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
    to its input size ``O`` (SPEC §3).

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


def unfold(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Extract sliding windows (im2col) for any number of spatial dimensions.

    Args:
        input: ``[N, C, I_1, …, I_D]``, or ``[C, I_1, …, I_D]`` when a tuple argument fixes D.
        kernel_size, dilation, padding, stride: an int or a D-tuple each, as
            ``torch.nn.functional.unfold``. With only ints, ``D = input.dim() − 2`` (unlike
            torch, which always assumes D = 2).
        strategy: execution strategy (see :mod:`tnconv.contract`).

    Returns:
        ``[N, C·∏K, ∏O]`` (rows channel-major, then kernel position; columns the windows
        in row-major order) — equal to ``torch.nn.functional.unfold`` for D = 2.

    >>> import torch, tnconv
    >>> tnconv.unfold(torch.randn(2, 3, 5, 5, 5), 2, stride=(1, 2, 3)).shape
    torch.Size([2, 24, 16])
    """
    check_tensor(input, "input")
    dims = _spatial_dims((kernel_size, dilation, padding, stride), input.dim() - 2)
    if input.dim() == dims + 1:
        return unfold(input.unsqueeze(0), kernel_size, dilation, padding, stride, strategy=strategy).squeeze(0)
    if dims < 1 or input.dim() != dims + 2:
        raise ValueError(
            f"input must have shape [N, C, I_1..I_{max(dims, 1)}] or [C, I_1..I_{max(dims, 1)}], "
            f"got {tuple(input.shape)}"
        )
    network = unfold_network(input.shape, kernel_size, dilation, padding, stride)
    return contract(network, strategy, x=input)


def fold(
    input: torch.Tensor,
    output_size: IntOrTuple,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    padding: Padding = 0,
    stride: IntOrTuple = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Sum sliding windows back into a tensor (col2im), the adjoint of :func:`unfold`.

    Args:
        input: ``[N, C·∏K, L]`` or ``[C·∏K, L]``, laid out as :func:`unfold` returns it.
        output_size: the spatial size ``[I_1, …, I_D]`` of the result.
        kernel_size, dilation, padding, stride: as ``torch.nn.functional.fold``; D is the
            length of the first tuple among ``kernel_size, dilation, padding, stride,
            output_size``, else 2 (as torch).
        strategy: execution strategy (see :mod:`tnconv.contract`).

    Returns:
        ``[N, C, I_1, …, I_D]`` (equal to ``torch.nn.functional.fold`` for D = 2).

    >>> import torch, tnconv
    >>> x = torch.randn(1, 2, 4, 4, 4)
    >>> ones = tnconv.fold(tnconv.unfold(torch.ones_like(x), 3), (4, 4, 4), 3)
    >>> ones[0, 0, :, :, 0]       # how many windows cover each position
    tensor([[1., 2., 2., 1.],
            [2., 4., 4., 2.],
            [2., 4., 4., 2.],
            [1., 2., 2., 1.]])
    """
    check_tensor(input, "input")
    if input.dim() == 2:
        return fold(input.unsqueeze(0), output_size, kernel_size, dilation, padding, stride, strategy=strategy).squeeze(
            0
        )
    network = fold_network(input.shape, output_size, kernel_size, dilation, padding, stride)
    return contract(network, strategy, u=input)


def unfold_transpose(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """The unfolded input of a transposed convolution (SPEC §3), any D.

    With it a transposed convolution with ``groups=1`` is one matrix product:
    ``conv_transpose(x, w) = w_matrix @ unfold_transpose(x)``, where
    ``w_matrix = w.transpose(0, 1).flatten(1)`` is ``[C_out, C_in·∏K]``.

    Args:
        input: the transposed convolution's input ``[N, C_in, O_1, …, O_D]``.
        kernel_size, stride, padding, output_padding, dilation: as
            ``torch.nn.functional.conv_transpose2d``.
        strategy: execution strategy (see :mod:`tnconv.contract`).

    Returns:
        ``[N, C_in·∏K, ∏I']`` with ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``.

    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 3, 4, 4), torch.randn(3, 5, 3, 3)
    >>> cols = tnconv.unfold_transpose(x, 3, stride=2, padding=1)
    >>> y = (w.transpose(0, 1).flatten(1) @ cols).view(2, 5, 7, 7)
    >>> torch.allclose(y, torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=1), atol=1e-4)
    True
    """
    check_tensor(input, "input", min_dim=3)
    network = unfold_transpose_network(input.shape, kernel_size, stride, padding, output_padding, dilation)
    return contract(network, strategy, x=input)
