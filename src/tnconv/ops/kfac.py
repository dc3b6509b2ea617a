"""Kronecker factors of KFAC for convolutions (SPEC §3): KFC / KFAC-expand and KFAC-reduce.

Per group ``g`` a convolution is ``z[:, o] = W_g u[:, o] (+ b_g)`` with ``W_g`` the weight
flattened to ``[C_out/G, d]``, ``d = C_in/G·∏K``, and ``u[:, o]`` the unfolded input at
output position ``o`` (index order ``(ci, k1, …, kD)`` row-major, as
``torch.nn.functional.unfold`` per group). The per-sample gradient of a loss ``ℓ_n`` is
``Σ_o g[:, o] ⊗ u[:, o]`` with ``g = ∂ℓ_n/∂z`` (row-major flattening of ``W_g``), and KFAC
approximates the GGN/Fisher block of ``W_g`` by ``B ⊗ A``:

============== ============================================== =============================================
flavour        input factor ``A`` (this module)                output-gradient factor ``B``
============== ============================================== =============================================
expand (KFC)   ``(1/N) Σ_{n,o} u u^T``                         ``(1/|O|) Σ_{n,o} g g^T``
reduce         ``(1/N) Σ_n ū ū^T``, ``ū = (1/|O|) Σ_o u``      ``Σ_n ḡ ḡ^T``, ``ḡ = Σ_o g``
============== ============================================== =============================================

``|O| = ∏ O_d``. With these normalisations ``torch.kron(B[g], A[g])`` approximates the GGN
``Σ_n J_n^T H_n J_n`` of a **sum**-reduced loss w.r.t. ``w[g·Co:(g+1)·Co].flatten()``
(``[C_out/G, d]`` row-major) when ``g`` holds the per-sample loss gradients (or the columns
``s`` of the loss-Hessian square root, several per sample allowed). For a **mean**-reduced
loss ``(1/N) Σ_n ℓ_n`` divide by ``N``; if ``g`` is the gradient autograd returns for the mean
loss (which carries a factor ``1/N``), multiply by ``N`` instead. (KFAC papers write
``A ⊗ B`` for the column-major ``vec(W)``; the blocks are the same.)

With ``bias=True`` a constant feature ``1`` is appended to ``u`` at every position (the
weight matrix becomes ``[W_g | b_g]``, ``[C_out/G, d+1]``), so ``A`` is ``[G, d+1, d+1]``:
for expand the last row is ``(1/N) Σ_{n,o} u^T`` and the corner ``|O|``; for reduce it is
``ū``'s mean ``(1/N) Σ_n ū^T`` and the corner ``1``.

Transposed convolutions (``*_transpose``) use the unfold of the transposed convolution's
input, ``u[n, (c k), i] = Σ_o x[n, c, o] Π[i, o, k]`` with ``Π`` of the convolution mapping
``I'`` to ``O``: the positions are the ``I'`` output positions of the transposed
convolution, and the groups are its groups (its weight ``[C_in, C_out/G, K…]`` read per
group as ``[C_out/G, (C_in/G)·∏K]``, i.e. ``w[g·Ci:(g+1)·Ci].transpose(0, 1)`` flattened).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import torch

from ..hyperparams import (
    IntOrTuple,
    Padding,
    check_tensor,
    conv_geometry,
    conv_transpose_geometry,
    normalize_groups,
)
from ..network import TensorNetwork
from .squares import contract_square, square_network
from .unfold import patches_network

# ---------------------------------------------------------------------------- patches


def _check_input_shape(x_shape: Sequence[int], name: str = "x_shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 3:
        raise ValueError(f"{name} must have shape [N, C_in, I_1, ...] (at least 3 dimensions), got {shape}")
    return shape


def input_patches(
    x_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The unfolded input ``x[n,g,ci,i] Π[i,o,k]`` as the convolution's network without ``w``.

    Output axes ``[n, g, (ci k1 … kD), (o1 … oD)]``: ``[N, G, C_in/G·∏K, ∏O]``.
    """
    x_shape = _check_input_shape(x_shape)
    groups = normalize_groups(groups, x_shape[1])
    geometry = conv_geometry(x_shape[2:], kernel_size, stride, padding, dilation)
    return patches_network(x_shape[0], x_shape[1], geometry, groups=groups)


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


# --------------------------------------------------------------------- factor networks


def _positions(patches: TensorNetwork) -> int:
    return math.prod(patches.size(leg) for leg in patches.output[3])


@lru_cache(maxsize=1024)
def _square_base(patches: TensorNetwork, approx: str) -> tuple[TensorNetwork, float]:
    """``J`` and the scale of the factor ``scale · J J'``: ``J = u`` (expand) or ``Σ_o u`` (reduce)."""
    batch = patches.size("n")
    if approx == "expand":
        return patches, 1.0 / batch
    summed = patches.with_nodes(patches.nodes, output=patches.output[:3])
    return summed, 1.0 / (batch * _positions(patches) ** 2)


def _factor_network(patches: TensorNetwork, approx: str) -> TensorNetwork:
    base, scale = _square_base(patches, approx)
    return square_network(base, keep=(1,), outer=(2,)).scaled(scale)


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
    return _factor_network(input_patches(x_shape, kernel_size, stride, padding, dilation, groups), "expand")


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
    return _factor_network(input_patches(x_shape, kernel_size, stride, padding, dilation, groups), "reduce")


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
    return _factor_network(patches, "expand")


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
    return _factor_network(patches, "reduce")


# ----------------------------------------------------------------------- evaluation


@lru_cache(maxsize=1024)
def _feature_sum(patches: TensorNetwork) -> TensorNetwork:
    """``Σ_{n,o} u``: ``[G, C_in/G·∏K]``."""
    return patches.with_nodes(patches.nodes, output=patches.output[1:3])


def _factor(x: torch.Tensor, patches: TensorNetwork, approx: str, bias: bool) -> torch.Tensor:
    base, scale = _square_base(patches, approx)
    factor = contract_square(base, {"x": x}, keep=(1,), outer=(2,), scale=scale)
    if not bias:
        return factor
    batch, positions = patches.size("n"), _positions(patches)
    mean = _feature_sum(patches).simplify().contract(x=x) / batch
    corner = float(positions)
    if approx == "reduce":
        mean, corner = mean / positions, 1.0
    groups, d = mean.shape
    full = factor.new_empty(groups, d + 1, d + 1)
    full[:, :d, :d] = factor
    full[:, :d, d] = mean
    full[:, d, :d] = mean
    full[:, d, d] = corner
    return full


def _check_x(x: torch.Tensor) -> None:
    check_tensor(x, "x", min_dim=3)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def kfc_factor(
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """KFC / KFAC-expand input factor ``A = (1/N) Σ_{n,o} u u^T`` of a convolution, per group.

    Args:
        x: the layer input ``[N, C_in, I_1, …, I_D]``, any ``D ≥ 1``.
        kernel_size, stride, padding, dilation, groups: the convolution's, as in
            ``torch.nn.functional.conv2d`` (``padding`` may be ``'same'``/``'valid'``).
        bias: append the constant feature 1 (for a layer with bias; see the module docs).

    Returns:
        ``[G, d, d]`` with ``d = C_in/G·∏K`` (``d + 1`` with ``bias``), rows/columns in the
        order ``(ci, k1, …, kD)``.

    >>> import torch, tnconv
    >>> x = torch.randn(4, 6, 8, 8)
    >>> tnconv.kfc_factor(x, 3, padding=1, groups=2).shape
    torch.Size([2, 27, 27])
    >>> tnconv.kfc_factor(x, 3, padding=1, groups=2, bias=True).shape
    torch.Size([2, 28, 28])
    """
    _check_x(x)
    return _factor(x, input_patches(x.shape, kernel_size, stride, padding, dilation, groups), "expand", bias)


def kfac_reduce_factor(
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """KFAC-reduce input factor ``A = (1/N) Σ_n ū ū^T``, ``ū = (1/|O|) Σ_o u``, per group.

    Arguments and result as :func:`kfc_factor`.

    >>> import torch, tnconv
    >>> x = torch.randn(4, 3, 9)
    >>> tnconv.kfac_reduce_factor(x, 3, stride=2, bias=True).shape
    torch.Size([1, 10, 10])
    """
    _check_x(x)
    return _factor(x, input_patches(x.shape, kernel_size, stride, padding, dilation, groups), "reduce", bias)


def kfc_factor_transpose(
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """KFC / KFAC-expand input factor of a transposed convolution, per group.

    Args:
        x: the transposed convolution's input ``[N, C_in, O_1, …, O_D]``.
        kernel_size, stride, padding, output_padding, dilation, groups: as in
            ``torch.nn.functional.conv_transpose2d``.
        bias: append the constant feature 1.

    Returns:
        ``[G, d, d]``, ``d = C_in/G·∏K`` (``d + 1`` with ``bias``); positions are the
        transposed convolution's output positions ``I'``.

    >>> import torch, tnconv
    >>> x = torch.randn(2, 4, 5, 5)
    >>> tnconv.kfc_factor_transpose(x, 3, stride=2, padding=1, output_padding=1, groups=2).shape
    torch.Size([2, 18, 18])
    """
    _check_x(x)
    patches = input_patches_transpose(x.shape, kernel_size, stride, padding, output_padding, dilation, groups)
    return _factor(x, patches, "expand", bias)


def kfac_reduce_factor_transpose(
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """KFAC-reduce input factor of a transposed convolution (mean over its ``I'`` positions).

    Arguments and result as :func:`kfc_factor_transpose`.

    >>> import torch, tnconv
    >>> tnconv.kfac_reduce_factor_transpose(torch.randn(2, 3, 4), 2, stride=2).shape
    torch.Size([1, 6, 6])
    """
    _check_x(x)
    patches = input_patches_transpose(x.shape, kernel_size, stride, padding, output_padding, dilation, groups)
    return _factor(x, patches, "reduce", bias)


def output_grad_factor(
    grad_output: torch.Tensor, approx: Literal["expand", "reduce"] = "expand", groups: int = 1
) -> torch.Tensor:
    """Output-gradient factor ``B`` of KFAC, per group.

    Args:
        grad_output: gradients w.r.t. the layer output ``[N, C_out, O_1, …, O_D]`` (``D ≥ 0``);
            several vectors per sample (Monte-Carlo samples, columns of a loss-Hessian square
            root) are passed flattened into the batch dimension.
        approx: ``"expand"``: ``B = (1/|O|) Σ_{n,o} g g^T``; ``"reduce"``:
            ``B = Σ_n ḡ ḡ^T`` with ``ḡ = Σ_o g``.
        groups: the layer's groups.

    Returns:
        ``[G, C_out/G, C_out/G]``. ``torch.kron(B[g], A[g])`` is the KFAC block of group
        ``g``'s weight flattened as ``[C_out/G, C_in/G·∏K]`` (see the module docs for sum vs.
        mean losses).

    >>> import torch, tnconv
    >>> g = torch.randn(4, 6, 5, 5)
    >>> tnconv.output_grad_factor(g, "reduce", groups=3).shape
    torch.Size([3, 2, 2])
    """
    check_tensor(grad_output, "grad_output", min_dim=2)
    if approx not in ("expand", "reduce"):
        raise ValueError(f"approx must be 'expand' or 'reduce', got {approx!r}")
    groups = normalize_groups(groups, grad_output.shape[1])
    n, channels = grad_output.shape[:2]
    g = grad_output.reshape(n, groups, channels // groups, -1)
    if approx == "expand":
        return torch.einsum("ngap,ngbp->gab", g, g) / g.shape[-1]
    summed = g.sum(-1)
    return torch.einsum("nga,ngb->gab", summed, summed)
