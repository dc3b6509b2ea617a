"""Rank-aware eigendecomposition of a Kronecker input factor from its root (docs/kfac.md).

A layer's input factor is a Gram matrix ``A = Jᵀ J`` of a *root* ``J`` (``[G, r, d]`` per
group) whose rows are the scaled unfolded inputs:

- ``expand``: ``J = a / √N``, one row per sample and output position (``r = N·|O|``);
- ``reduce``: ``J = (Σ_o a) / (|O|·√N)``, one row per sample (``r = N``);
- an EMA ``β·A_old + (1 − β)·A_new`` has the root ``[√β·J_old ; √(1 − β)·J_new]``.

When ``r < d`` the factor has at most ``r`` nonzero eigenvalues and its eigenvectors follow
from ``J`` without the ``O(d³)`` dense ``eigh``: a Householder QR ``Jᵀ = [Q₁ Q₂] [R₁; 0]``
gives ``A = Q₁ R₁ R₁ᵀ Q₁ᵀ``, the SVD ``R₁ = U Σ Wᵀ`` the nonzero eigenpairs ``(Σ², Q₁U)``,
and ``Q₂`` an orthonormal basis of the null space (eigenvalue 0; any orthonormal basis of it
is an eigenbasis). The complete ``Q = I − V T Vᵀ`` is formed from the reflectors ``V`` and
the compact-WY triangle ``T`` (``T⁻¹ = triu(VᵀV, 1) + diag(1/τ)``) in one ``d×r×d`` product,
so the route costs about ``d²r + d r² + r³`` multiply-adds instead of ``eigh``'s ``∝ d³``.

Example:
    >>> J = torch.randn(2, 3, 8, dtype=torch.float64)          # G=2 groups, r=3 rows, d=8
    >>> values, vectors = eigh_from_root(J)
    >>> A = J.transpose(1, 2) @ J
    >>> torch.allclose(vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2), A)
    True
"""

from __future__ import annotations

import math

import torch

from .layers import ConvLayer, KroneckerLayer

#: keep a root only while it has at most this fraction of ``d`` rows (it is then at most
#: half the size of the factor, and the QR route is cheaper than ``eigh``)
MAX_ROW_FRACTION = 0.5


def root_rows(layer: KroneckerLayer, output: torch.Tensor, approx: str) -> int:
    """Rows of the root of one update's input factor: ``N·|O|`` (expand) or ``N`` (reduce)."""
    conv = isinstance(layer, ConvLayer)
    if output.dim() == (layer.dims + 1 if conv else 1):  # unbatched: one sample
        batch, spatial = 1, output.shape[1:] if conv else ()
    else:
        batch, spatial = output.shape[0], output.shape[2:] if conv else output.shape[1:-1]
    return batch * math.prod(spatial) if approx == "expand" else batch


def keeps_root(rows: int, d: int) -> bool:
    """Whether a root of ``rows`` rows is worth keeping for a ``d×d`` factor."""
    return 0 < rows <= MAX_ROW_FRACTION * d


def root_route_cheaper(d: int, rows: int) -> bool:
    """Cost estimate (multiply-adds): QR route ``d²r + d r² + r³`` against ``eigh``'s ``d³``.

    >>> root_route_cheaper(4608, 128), root_route_cheaper(64, 64)
    (True, False)
    """
    return rows < d and d * d * rows + d * rows * rows + rows**3 < d**3


def input_root(layer: KroneckerLayer, inputs: torch.Tensor, output: torch.Tensor, approx: str) -> torch.Tensor:
    """The root ``J`` (``[G, r, d]``, ``A = Jᵀ J`` per group) of one update's input factor.

    Args:
        layer: the layer's adapter (any kind: linear, convolution, grouped, transposed).
        inputs: its input, as in the forward pass.
        output: its output (only the shape is read).
        approx: ``"expand"`` or ``"reduce"``.
    """
    if approx == "expand":
        a = layer.unfolded(inputs, output)  # [N, G, d, O]
        batch, groups, d, _ = a.shape
        return a.permute(1, 0, 3, 2).reshape(groups, -1, d) / math.sqrt(batch)
    return layer.reduce_root(inputs, output)


def merge_roots(old: torch.Tensor, new: torch.Tensor, ema: float) -> torch.Tensor:
    """The root of ``ema·A_old + (1 − ema)·A_new``: the scaled roots stacked (``[G, r₁+r₂, d]``,
    or ``[r₁+r₂, d]`` for ungrouped roots)."""
    return torch.cat([math.sqrt(ema) * old, math.sqrt(1 - ema) * new.to(old.dtype)], dim=-2)


def eigh_from_root(root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``[G, d]`` and orthonormal eigenvectors ``[G, d, d]`` (columns) of
    ``A = Jᵀ J`` from ``J`` (``[G, r, d]``, ``r < d``).

    Unlike ``torch.linalg.eigh`` the order is not ascending: the ``r`` eigenvectors of the
    range come first (descending eigenvalues ``Σ²``), then the ``d − r`` null-space ones
    (eigenvalue ``0``), so that ``Q`` is overwritten in place instead of copied.
    """
    groups, rows, d = root.shape
    if rows >= d:
        raise ValueError(f"eigh_from_root needs fewer rows than columns, got a root of shape {tuple(root.shape)}")
    reflectors, tau = torch.geqrf(root.transpose(1, 2))  # Jᵀ = Q R, [G, d, r]
    V = reflectors.tril(-1)
    V.diagonal(dim1=1, dim2=2).fill_(1)
    eye_r = torch.eye(rows, dtype=root.dtype, device=root.device)
    # compact WY (the "UT transform"): Q = I − V T Vᵀ with T⁻¹ = triu(VᵀV, 1) + diag(1/τ)
    T_inv = (V.transpose(1, 2) @ V).triu(1) + torch.diag_embed(1 / tau)
    T = torch.linalg.solve_triangular(T_inv, eye_r.expand(groups, rows, rows), upper=True)
    # built as Qᵀ = I − V Tᵀ Vᵀ so that Q is column-major, as torch.linalg.eigh returns it
    Q = (V @ (T.transpose(1, 2) @ V.transpose(1, 2))).neg_()  # in place: one d×d buffer
    Q.diagonal(dim1=1, dim2=2).add_(1)
    Q = Q.transpose(1, 2)
    U, S, _ = torch.linalg.svd(reflectors[:, :rows].triu(), full_matrices=False)  # R₁ = U Σ Wᵀ
    Q[:, :, :rows] = Q[:, :, :rows] @ U
    values = torch.zeros(groups, d, dtype=root.dtype, device=root.device)
    values[:, :rows] = S * S
    return values, Q
