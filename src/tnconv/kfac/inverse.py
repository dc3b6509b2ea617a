"""Damped inverses of Kronecker products ``B ⊗ A`` and their action on weight gradients.

A layer's curvature block, over its per-group matrix ``W_g`` (``[C_out/G, d]``, flattened
row-major: ``torch.kron(B_g, A_g)`` is the block), is approximated by ``B_g ⊗ A_g``;
preconditioning maps the gradient matrix ``Γ_g`` to the matrix of
``(damped block)⁻¹ vec(Γ_g)``. Two damping conventions:

- ``"eigen"`` (exact damping): ``(B ⊗ A + λI)⁻¹``. With ``A = Q_A diag(α) Q_Aᵀ`` and
  ``B = Q_B diag(β) Q_Bᵀ`` it is ``Q_B [(Q_Bᵀ Γ Q_A) ⊘ (β αᵀ + λ)] Q_Aᵀ``.
- ``"factor"`` (factor-wise damping, Martens & Grosse 2015):
  ``(B + (√λ/π) I)⁻¹ ⊗ (A + π√λ I)⁻¹``, i.e. ``Γ ↦ (B + (√λ/π)I)⁻¹ Γ (A + π√λ I)⁻¹``,
  with ``π = 1`` or, with π-correction, ``π = √((tr A / dim A) / (tr B / dim B))``.

Example:
    >>> A, B = torch.eye(3).expand(2, 3, 3), 2 * torch.eye(4).expand(2, 4, 4)
    >>> inverse = damped_inverse(A, B, damping=1.0, mode="eigen")
    >>> inverse.apply(torch.ones(2, 4, 3))[0, 0]
    tensor([0.3333, 0.3333, 0.3333])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

INVERSE_MODES = ("eigen", "factor")


@dataclass
class KroneckerInverse:
    """The damped inverse of one layer's ``B ⊗ A`` (per group), ready to apply.

    ``mode="eigen"``: ``A_eigvals [G, d]``, ``A_eigvecs [G, d, d]``, ``B_eigvals``,
    ``B_eigvecs`` and ``damping``. ``mode="factor"``: ``A_inv [G, d, d]`` and
    ``B_inv [G, C_out/G, C_out/G]`` (damping already inside).
    """

    mode: str
    damping: float = 0.0
    A_eigvals: torch.Tensor | None = None
    A_eigvecs: torch.Tensor | None = None
    B_eigvals: torch.Tensor | None = None
    B_eigvecs: torch.Tensor | None = None
    A_inv: torch.Tensor | None = None
    B_inv: torch.Tensor | None = None

    def apply(self, gradient: torch.Tensor) -> torch.Tensor:
        """``[G, C_out/G, d]`` → the preconditioned ``[G, C_out/G, d]``."""
        if self.mode == "factor":
            assert self.A_inv is not None and self.B_inv is not None
            return self.B_inv @ gradient.to(self.A_inv.dtype) @ self.A_inv
        assert self.A_eigvecs is not None and self.B_eigvecs is not None
        assert self.A_eigvals is not None and self.B_eigvals is not None
        qa, qb = self.A_eigvecs, self.B_eigvecs
        rotated = qb.transpose(1, 2) @ gradient.to(qa.dtype) @ qa
        scaled = rotated / (self.B_eigvals.unsqueeze(2) * self.A_eigvals.unsqueeze(1) + self.damping)
        return qb @ scaled @ qa.transpose(1, 2)


def pi_correction(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``π = √((tr A / dim A) / (tr B / dim B))`` per group, ``[G]``; ``1`` where a trace vanishes.

    >>> pi_correction(4 * torch.eye(2).unsqueeze(0), torch.eye(3).unsqueeze(0))
    tensor([2.])
    """
    mean_a = A.diagonal(dim1=1, dim2=2).mean(1)
    mean_b = B.diagonal(dim1=1, dim2=2).mean(1)
    valid = (mean_a > 0) & (mean_b > 0)
    ratio = torch.where(valid, mean_a / torch.where(valid, mean_b, torch.ones_like(mean_b)), torch.ones_like(mean_a))
    return ratio.sqrt()


def _spd_inverse(matrix: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(matrix))


def damped_inverse(
    A: torch.Tensor,
    B: torch.Tensor,
    damping: float,
    mode: str = "eigen",
    use_pi_correction: bool = False,
    dtype: torch.dtype | None = None,
) -> KroneckerInverse:
    """The damped inverse of ``B ⊗ A`` per group (see the module docstring).

    Args:
        A: ``[G, d, d]``, symmetric positive semi-definite.
        B: ``[G, C_out/G, C_out/G]``, symmetric positive semi-definite.
        damping: ``λ ≥ 0`` (``"factor"`` needs ``λ > 0`` unless ``A`` and ``B`` are invertible).
        mode: ``"eigen"`` or ``"factor"``.
        use_pi_correction: π-correction of the factor-wise damping (``"factor"`` only).
        dtype: compute (and keep) the decompositions or inverses in this dtype (``None``:
            the factors'). ``eigh`` of a rank-deficient ``float32`` factor can fail to converge.
    """
    if dtype is not None:
        A, B = A.to(dtype), B.to(dtype)
    if mode == "eigen":
        a_vals, a_vecs = torch.linalg.eigh(A)
        b_vals, b_vecs = torch.linalg.eigh(B)
        # round-off can leave tiny negative eigenvalues of a PSD factor
        return KroneckerInverse("eigen", damping, a_vals.clamp(min=0), a_vecs, b_vals.clamp(min=0), b_vecs, None, None)
    if mode != "factor":
        raise ValueError(f"inverse must be one of {INVERSE_MODES}, got {mode!r}")
    pi = pi_correction(A, B) if use_pi_correction else torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
    root = math.sqrt(damping)
    eye_a = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    eye_b = torch.eye(B.shape[-1], dtype=B.dtype, device=B.device)
    A_inv = _spd_inverse(A + (pi * root)[:, None, None] * eye_a)
    B_inv = _spd_inverse(B + (root / pi)[:, None, None] * eye_b)
    return KroneckerInverse("factor", damping, A_inv=A_inv, B_inv=B_inv)


def check_damping(damping: object) -> float:
    """``damping`` as a float; ``ValueError`` unless it is a finite number ``> 0``.

    >>> check_damping(1e-3)
    0.001
    """
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping) or damping <= 0:
        raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
    return float(damping)
