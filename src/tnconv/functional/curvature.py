"""Kronecker factors of KFAC for convolutions (docs/reference.md §3): KFC / KFAC-expand and KFAC-reduce.

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
from collections.abc import Callable
from typing import Literal

import torch

from ..caching import cached
from ..execute.dispatch import bind
from ..execute.ops import float32_under_autocast, traced_input_factor, tracing
from ..execute.squares import scaled_gram
from ..spec.validation import IntOrTuple, Padding, check_floating, check_tensor, normalize_groups
from ..symbolic.builders.curvature import (
    _positions,
    _square_base,
    feature_sum_network,
    input_patches,
    input_patches_transpose,
)
from ..symbolic.network import TensorNetwork
from ..symbolic.squares import square_network

# ---------------------------------------------------------------------------- patches


def _patches(
    x_shape: torch.Size,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    output_padding: IntOrTuple | None,
) -> TensorNetwork:
    """The unfolded-input network of a convolution (``output_padding=None``) or of a
    transposed one (validated here)."""
    if output_padding is None:
        return input_patches(x_shape, kernel_size, stride, padding, dilation, groups)
    return input_patches_transpose(x_shape, kernel_size, stride, padding, output_padding, dilation, groups)


# ----------------------------------------------------------------------- evaluation


@cached(maxsize=1024)
def _factor_runner(
    approx: str,
    x_shape: torch.Size,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    bias: bool,
    output_padding: IntOrTuple | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> A`` of one signature, everything that depends on shapes alone done once: the
    patches network (validated here, on the first call), the square network and the
    dispatcher's bound runners of it and of the bias row (:func:`~tnconv.execute.dispatch.bind`;
    ``x`` matches the shape keyed on, so its check is skipped). A repeated call of a
    front-end is one look-up of this cache plus the tensor work."""
    patches = _patches(x_shape, kernel_size, stride, padding, dilation, groups, output_padding)
    _, group_count, d, _ = patches.output_shape
    if patches.size("n") == 0:  # a mean over no samples: NaN, as torch's mean of an empty batch
        return lambda x: x.new_full((group_count, d + bias, d + bias), math.nan)
    base, scale = _square_base(patches, approx)
    checked = base.input_shapes
    batch, positions = patches.size("n"), _positions(patches)
    if bias and approx == "reduce":
        return _reduce_with_bias(
            _root_runner(x_shape, kernel_size, stride, padding, dilation, groups, True, output_padding), d
        )
    run_square = bind(square_network(base, keep=(1,), outer=(2,), scale=scale), checked)
    if not bias:
        return lambda x: run_square({"x": x}, None)
    run_sum = bind(feature_sum_network(patches), checked)  # expand: Σ_{n,o} u, the bias row

    def run(x: torch.Tensor) -> torch.Tensor:
        tensors = {"x": x}
        factor = run_square(tensors, None)
        mean = run_sum(tensors, None) / batch
        full = factor.new_empty(group_count, d + 1, d + 1)
        full[:, :d, :d] = factor
        full[:, :d, d] = mean
        full[:, d, :d] = mean
        full[:, d, d] = float(positions)
        return full

    return run


def _reduce_with_bias(
    run_root: Callable[[torch.Tensor], torch.Tensor], d: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """KFAC-reduce ``A`` of a layer with bias as the Gram matrix ``Rᵀ R`` of its root
    (:func:`_root_runner`, whose constant feature carries the bias): one pass over ``x`` and
    one GEMM (the bias row is then ``(1/N) Σ_n ū``). The corner is set to its exact value 1."""

    def run(x: torch.Tensor) -> torch.Tensor:
        factor = scaled_gram(run_root(x).transpose(1, 2), 1.0)  # [G, d+1, N], a view
        factor[:, d, d] = 1.0
        return factor

    return run


@cached(maxsize=1024)
def _root_runner(
    x_shape: torch.Size,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    bias: bool,
    output_padding: IntOrTuple | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> R`` (``[G, N, d]``, ``A = Rᵀ R``) of KFAC-reduce for one signature: the window
    sums ``Σ_o u`` of the factor's network (one pass over ``x``, no GEMM), scaled by
    ``1/(|O|·√N)``, with the constant feature ``1/√N`` appended for a bias."""
    patches = _patches(x_shape, kernel_size, stride, padding, dilation, groups, output_padding)
    _, group_count, d, _ = patches.output_shape
    if patches.size("n") == 0:  # a mean over no samples: NaN, as kfac_reduce_factor
        return lambda x: x.new_full((group_count, 1, d + bias), math.nan)
    base, scale = _square_base(patches, "reduce")
    run_sums = bind(base, base.input_shapes)
    batch, factor = patches.size("n"), math.sqrt(scale)  # scale = 1/(N·|O|²)

    def run(x: torch.Tensor) -> torch.Tensor:
        root = run_sums({"x": x}, None).transpose(0, 1) * factor  # [G, N, d] (out of place: autograd, vmap)
        if not bias:
            return root
        return torch.cat([root, root.new_full((group_count, batch, 1), 1.0 / math.sqrt(batch))], dim=2)

    return run


def _input_statistic(
    approx: str,
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    bias: bool,
    output_padding: IntOrTuple | None = None,
) -> torch.Tensor:
    """What the input-factor front-ends share: ``x`` checked, then the factor (``approx``
    ``"expand"``/``"reduce"``) or the KFAC-reduce root (``"reduce_root"``) of a convolution
    (``output_padding=None``) or a transposed one — one operator while compiling or tracing
    (:mod:`tnconv.functional.curvature_ops`), else the cached runner of the signature."""
    check_tensor(x, "x", min_dim=3)
    check_floating(x, "x")
    if tracing():
        return traced_input_factor(x, approx, kernel_size, stride, padding, dilation, groups, bias, output_padding)
    if approx == "reduce_root":
        return _root_runner(x.shape, kernel_size, stride, padding, dilation, groups, bias, output_padding)(x)
    return _factor_runner(approx, x.shape, kernel_size, stride, padding, dilation, groups, bias, output_padding)(x)


@float32_under_autocast
def kfac_reduce_root(
    x: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """A root ``R`` of the KFAC-reduce input factor: ``A = Rᵀ R`` per group.

    ``R[g, n] = ū_n / √N`` (``ū`` the mean over positions of the unfolded input, a constant
    ``1/√N`` appended with ``bias``): one pass over ``x`` and no ``d × d`` product. ``A`` has
    rank at most ``N``; when ``N`` is well below ``d`` (deep layers, e.g. ``d = 4608`` for
    512 channels 3×3 at batch 64) the root is far smaller than ``A`` and gives its
    eigenbasis without a dense ``eigh`` (:mod:`tnconv.kfac.eigenbasis`).

    Arguments as :func:`kfac_reduce_factor`.

    Returns:
        ``[G, N, d]`` (``d + 1`` with ``bias``); ``[G, 1, d]`` of NaN for an empty batch
        (whose factor, a mean over no samples, is NaN).

    >>> import torch, tnconv
    >>> x = torch.randn(4, 6, 8, 8, dtype=torch.float64)
    >>> R = tnconv.kfac_reduce_root(x, 3, padding=1, groups=2, bias=True)
    >>> R.shape
    torch.Size([2, 4, 28])
    >>> torch.allclose(R.transpose(1, 2) @ R, tnconv.kfac_reduce_factor(x, 3, padding=1, groups=2, bias=True))
    True
    """
    return _input_statistic("reduce_root", x, kernel_size, stride, padding, dilation, groups, bias)


@float32_under_autocast
def kfac_reduce_root_transpose(
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
    """:func:`kfac_reduce_root` of a transposed convolution: ``Rᵀ R`` is
    :func:`kfac_reduce_factor_transpose` (same arguments).

    >>> import torch, tnconv
    >>> tnconv.kfac_reduce_root_transpose(torch.randn(2, 3, 4), 2, stride=2).shape
    torch.Size([1, 2, 6])
    """
    return _input_statistic("reduce_root", x, kernel_size, stride, padding, dilation, groups, bias, output_padding)


@float32_under_autocast
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
    return _input_statistic("expand", x, kernel_size, stride, padding, dilation, groups, bias)


@float32_under_autocast
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
    return _input_statistic("reduce", x, kernel_size, stride, padding, dilation, groups, bias)


@float32_under_autocast
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
    return _input_statistic("expand", x, kernel_size, stride, padding, dilation, groups, bias, output_padding)


@float32_under_autocast
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
    return _input_statistic("reduce", x, kernel_size, stride, padding, dilation, groups, bias, output_padding)


@float32_under_autocast
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
    g = grad_output.reshape(n, groups, channels // groups, math.prod(grad_output.shape[2:]))  # (n may be 0)
    if approx == "expand":
        return torch.einsum("ngap,ngbp->gab", g, g) / g.shape[-1]
    summed = g.sum(-1)
    return torch.einsum("nga,ngb->gab", summed, summed)
