"""KFAC and EKFAC as linear operators over the preconditioned layers' parameters.

The operator is block-diagonal: one block per layer and group, ``B_g ⊗ A_g`` (KFAC) or
``(Q_B ⊗ Q_A) diag(S_g) (Q_B ⊗ Q_A)ᵀ`` (EKFAC) on the row-major flattening of that group's
``[W_g | b_g]`` (see :mod:`tnconv.kfac.layers`). Vectors are laid out like the parameters
:meth:`CurvatureOperator.parameters` lists (each layer's weight, then its bias, layers in
``named_modules()`` order): a list of tensors shaped like them, or one flat ``[P]`` vector
or ``[P, K]`` matrix (``K`` vectors) of their ``flatten()`` s concatenated.

Everything is exact for the Kronecker form: ``trace = Σ_g tr A_g tr B_g``,
``‖·‖_F = √(Σ_g ‖A_g‖²_F ‖B_g‖²_F)``, ``log det = Σ_g (c log det A_g + d log det B_g)``
(``A_g`` ``d×d``, ``B_g`` ``c×c``), and the inverse with damping ``λ`` is
``(B ⊗ A + λI)⁻¹`` through the eigendecompositions (EKFAC: ``1/(S + λ)``).

Example:
    >>> import torch, tnconv
    >>> model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> kfac = tnconv.kfac.KFAC(model, torch.nn.MSELoss(), damping=1e-2)
    >>> _ = kfac.update(torch.randn(6, 1, 4), torch.randn(6, 2))
    >>> op = kfac.operator()
    >>> op.shape
    (18, 18)
    >>> v = torch.randn(18)
    >>> torch.allclose(op.inverse(damping=1e-2) @ (op @ v + 1e-2 * v), v, atol=1e-4)
    True
    >>> bool(torch.isclose(op.trace(), torch.trace(op.to_dense())))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .layers import KroneckerLayer

Vector = torch.Tensor | Sequence[torch.Tensor]


def _grouped(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == 3 else t.unsqueeze(0)


class _KroneckerBlock:
    """``B ⊗ A`` per group (``A [G, d, d]``, ``B [G, c, c]``); ``A`` may be given by a root
    ``R`` (``[G, r, d]``, ``A = Rᵀ R``), which every method uses without forming ``A``."""

    def __init__(self, A: torch.Tensor | None, B: torch.Tensor, root: torch.Tensor | None = None) -> None:
        self.B = _grouped(B)
        self.A = None if A is None else _grouped(A)
        self.root = None if root is None else _grouped(root)

    def apply(self, m: torch.Tensor) -> torch.Tensor:  # [K, G, c, d]
        if self.root is not None:
            root = self.root
            return self.B @ ((m.to(root.dtype) @ root.transpose(1, 2)) @ root)
        assert self.A is not None
        return self.B @ m.to(self.A.dtype) @ self.A

    def trace(self) -> torch.Tensor:
        trace_b = self.B.diagonal(dim1=1, dim2=2).sum(1)
        if self.root is not None:
            return (self.root.square().sum((1, 2)) * trace_b).sum()
        assert self.A is not None
        return (self.A.diagonal(dim1=1, dim2=2).sum(1) * trace_b).sum()

    def squared_norm(self) -> torch.Tensor:
        if self.root is not None:  # ‖RᵀR‖_F = ‖R Rᵀ‖_F, an r × r product
            norm_a = (self.root @ self.root.transpose(1, 2)).square().sum((1, 2))
        else:
            assert self.A is not None
            norm_a = self.A.square().sum((1, 2))
        return (norm_a * self.B.square().sum((1, 2))).sum()

    def logdet(self) -> torch.Tensor:
        if self.root is not None and self.root.shape[1] < self.root.shape[2]:
            return torch.tensor(-math.inf, dtype=torch.float64)  # rank ≤ r < d: A is singular
        A = self.A if self.A is not None else self.root.transpose(1, 2) @ self.root  # type: ignore[union-attr]
        d, c = A.shape[-1], self.B.shape[-1]
        alpha = torch.linalg.eigvalsh(A.to(torch.float64))
        beta = torch.linalg.eigvalsh(self.B.to(torch.float64))
        if _singular(alpha) or _singular(beta):
            return torch.tensor(-math.inf, dtype=torch.float64)
        return c * alpha.log().sum() + d * beta.log().sum()


def _singular(eigenvalues: torch.Tensor) -> bool:
    """Whether a PSD spectrum ``[G, n]`` has an eigenvalue at round-off level (or below)."""
    top = eigenvalues.abs().amax(-1, keepdim=True)
    tol = eigenvalues.shape[-1] * torch.finfo(torch.float64).eps * top
    return bool((eigenvalues <= tol).any())


class _EigenBlock:
    """``(Q_B ⊗ Q_A) diag(values) (Q_B ⊗ Q_A)ᵀ`` per group, ``values [G, c, d]``."""

    def __init__(self, qa: torch.Tensor, qb: torch.Tensor, values: torch.Tensor) -> None:
        self.qa, self.qb, self.values = qa, qb, values.to(qa.dtype)

    def apply(self, m: torch.Tensor) -> torch.Tensor:
        rotated = self.qb.transpose(1, 2) @ m.to(self.qa.dtype) @ self.qa
        return self.qb @ (rotated * self.values) @ self.qa.transpose(1, 2)

    def trace(self) -> torch.Tensor:
        return self.values.sum()

    def squared_norm(self) -> torch.Tensor:
        return self.values.square().sum()

    def logdet(self) -> torch.Tensor:
        if _singular(self.values.flatten(1).to(torch.float64)):
            return torch.tensor(-math.inf, dtype=torch.float64)
        return self.values.to(torch.float64).log().sum()


class CurvatureOperator:
    """A block-diagonal curvature (or inverse) operator over the layers' parameters.

    Build it with :meth:`tnconv.kfac.KFAC.operator` (or ``kfac @ v`` directly).

    Attributes:
        shape: ``(P, P)``.
    """

    def __init__(self, layers: dict[str, KroneckerLayer], blocks: dict[str, object], source: object) -> None:
        self._layers, self._blocks, self._source = layers, blocks, source
        self._params = [p for layer in layers.values() for p in self._layer_params(layer)]
        size = sum(p.numel() for p in self._params)
        self.shape = (size, size)

    @staticmethod
    def _layer_params(layer: KroneckerLayer) -> list[torch.nn.Parameter]:
        params = [layer.module.weight]
        if layer.has_bias:
            params.append(layer.module.bias)
        return params

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the operator acts on, in the order of its vectors."""
        return list(self._params)

    # ---------------------------------------------------------------- products

    def _split(self, v: Vector) -> tuple[list[torch.Tensor], bool, bool]:
        """``[K, *p.shape]`` per parameter, whether ``v`` was flat and whether it had ``K``."""
        if isinstance(v, torch.Tensor):
            if v.dim() not in (1, 2) or v.shape[0] != self.shape[0]:
                raise ValueError(
                    f"v must be a flat [{self.shape[0]}] vector or [{self.shape[0]}, K] matrix, got {tuple(v.shape)}"
                )
            columns = v.dim() == 2
            mat = v if columns else v.unsqueeze(1)
            parts, start = [], 0
            for p in self._params:
                parts.append(mat[start : start + p.numel()].T.reshape(-1, *p.shape))
                start += p.numel()
            return parts, True, columns
        if not isinstance(v, (list, tuple)) or len(v) != len(self._params):
            raise TypeError(f"v must be a tensor or a list of {len(self._params)} tensors shaped like parameters()")
        for i, (t, p) in enumerate(zip(v, self._params)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"v[{i}] must have shape {tuple(p.shape)}, got {getattr(t, 'shape', type(t))}")
        return [t.unsqueeze(0) for t in v], False, False

    def matvec(self, v: Vector) -> Vector:
        """The operator applied to ``v`` (a flat ``[P]``/``[P, K]`` tensor or a list), same layout back."""
        parts, flat, columns = self._split(v)
        out: list[torch.Tensor] = []
        i = 0
        for name, layer in self._layers.items():
            weight = parts[i]
            bias = parts[i + 1] if layer.has_bias else None
            i += 2 if layer.has_bias else 1
            columns_in = [layer.to_matrix(weight[k], None if bias is None else bias[k]) for k in range(weight.shape[0])]
            result = self._blocks[name].apply(torch.stack(columns_in))  # type: ignore[attr-defined]
            pairs = [layer.from_matrix(result[k]) for k in range(result.shape[0])]
            out.append(torch.stack([w for w, _ in pairs]).to(weight.dtype))
            if bias is not None:
                out.append(torch.stack([b for _, b in pairs]).to(weight.dtype))  # type: ignore[misc]
        if not flat:
            return [t[0] for t in out]
        stacked = torch.cat([t.reshape(t.shape[0], -1) for t in out], dim=1).T
        return stacked if columns else stacked[:, 0]

    def __matmul__(self, v: Vector) -> Vector:
        return self.matvec(v)

    def to_dense(self) -> torch.Tensor:
        """The ``[P, P]`` matrix (for small models and tests)."""
        dtype = self._params[0].dtype
        return self.matvec(torch.eye(self.shape[0], dtype=dtype))  # type: ignore[return-value]

    # ---------------------------------------------------------------- scalars

    def trace(self) -> torch.Tensor:
        """``tr`` of the operator (exact, from the factors)."""
        return sum(b.trace() for b in self._blocks.values())  # type: ignore[attr-defined,return-value]

    def frobenius_norm(self) -> torch.Tensor:
        """``‖·‖_F`` of the operator (exact, from the factors)."""
        return torch.sqrt(sum(b.squared_norm() for b in self._blocks.values()))  # type: ignore[attr-defined,arg-type]

    def logdet(self) -> torch.Tensor:
        """``log det`` (float64; ``-inf`` when a factor is singular)."""
        return sum(b.logdet() for b in self._blocks.values())  # type: ignore[attr-defined,return-value]

    def det(self) -> torch.Tensor:
        """``det = exp(log det)`` (overflows easily: prefer :meth:`logdet`)."""
        return torch.exp(self.logdet())

    def inverse(self, damping: float | None = None) -> CurvatureOperator:
        """``(operator + λI)⁻¹`` exactly, ``λ`` = ``damping`` (default: the KFAC object's)."""
        from .inverse import check_damping

        lam = check_damping(self._source.damping if damping is None else damping)  # type: ignore[attr-defined]
        return CurvatureOperator(self._layers, self._source._inverse_blocks(lam), self._source)  # type: ignore[attr-defined]


def kfac_blocks(factors: dict, dtype: torch.dtype | None) -> dict[str, object]:
    # a factor held as its root stays one (KroneckerFactors): the blocks work on the root
    return {
        name: _KroneckerBlock(None, f.B, f.root) if f.root is not None and not f.formed else _KroneckerBlock(f.A, f.B)
        for name, f in factors.items()
    }


def eigen_blocks(bases: dict, values: dict) -> dict[str, object]:
    return {name: _EigenBlock(bases[name][0], bases[name][1], values[name]) for name in values}
