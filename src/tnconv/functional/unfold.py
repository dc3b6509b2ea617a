"""Unfolding (im2col), folding (col2im) and the unfolded input of a transposed convolution.

docs/reference.md §3: ``unfold = x[n, c, i] Π[i, o, k] → [n, (c k), (o)]``; ``fold`` is its adjoint,
derived as ``unfold_network(...).vjp("x", vector="u")``; the transposed convolution's
unfold ``x[n, c, o] Π[i, o, k] → [n, (c k), (i)]`` uses the Π of the convolution that maps
``I'`` to ``O`` (:func:`~tnconv.spec.geometry.conv_transpose_geometry`). Layouts are
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

import torch

from ..execute import ops
from ..execute.autodiff import contract
from ..spec.validation import IntOrTuple, Padding, check_tensor
from ..symbolic.builders.unfold import _spatial_dims, fold_network, unfold_network, unfold_transpose_network


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
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

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
    if ops.tracing():
        pads, name = ops.padding_arguments(padding, dims)
        sizes = [ops.int_list(a, dims) for a in (kernel_size, dilation)]
        return ops.unfold(input, *sizes, pads, name, ops.int_list(stride, dims), strategy)
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
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

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
    if ops.tracing():
        dims = _spatial_dims((kernel_size, dilation, padding, stride, output_size), 2)
        pads, name = ops.padding_arguments(padding, dims)
        sizes = [ops.int_list(a, dims) for a in (output_size, kernel_size, dilation)]
        return ops.fold(input, *sizes, pads, name, ops.int_list(stride, dims), strategy)
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
    """The unfolded input of a transposed convolution (docs/reference.md §3), any D.

    With it a transposed convolution with ``groups=1`` is one matrix product:
    ``conv_transpose(x, w) = w_matrix @ unfold_transpose(x)``, where
    ``w_matrix = w.transpose(0, 1).flatten(1)`` is ``[C_out, C_in·∏K]``.

    Args:
        input: the transposed convolution's input ``[N, C_in, O_1, …, O_D]``.
        kernel_size, stride, padding, output_padding, dilation: as
            ``torch.nn.functional.conv_transpose2d``.
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

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
    if ops.tracing():
        sizes = [ops.int_list(a, input.dim() - 2) for a in (kernel_size, stride, padding, output_padding, dilation)]
        return ops.unfold_transpose(input, *sizes, strategy)
    network = unfold_transpose_network(input.shape, kernel_size, stride, padding, output_padding, dilation)
    return contract(network, strategy, x=input)
