"""EKFAC (George et al., 2018): KFAC's eigenbasis with re-estimated eigenvalues (docs/reference.md §8).

Per layer group ``g``, with ``A = Q_A Λ_A Q_Aᵀ`` and ``B = Q_B Λ_B Q_Bᵀ`` the KFAC factors
of the same update (expand or reduce), the *corrections* are

``S_g = Σ_{n,m} (Q_Bᵀ G_{n,m} Q_A)²``   (elementwise, ``[C_out/G, d]``),

``G_{n,m}`` the weight gradient (row-major ``[C_out/G, d]``, bias column last) of sample
``n`` for backpropagated vector ``m`` — the vectors ``B`` uses (see
:mod:`tnconv.kfac.loss`; they carry ``√R``, so ``S`` is the diagonal of the curvature of
the reduced loss in the Kronecker eigenbasis). Preconditioning applies
``Q_B ((Q_Bᵀ Γ Q_A) / (S + λ)) Q_Aᵀ`` to the gradient matrix ``Γ``.

How the corrections are computed
--------------------------------
:meth:`EKFAC.update` first forms the KFAC factors (streaming, as :class:`~tnconv.kfac.KFAC`),
decomposes them, then runs a second forward pass and the *same* vectors backward again. At
each arriving output gradient ``b[n, g, co, o]`` of a layer with unfolded input
``a[n, g, (ci k), o] = Σ_i x[n, g, ci, i] Π[i, o, k]`` it contracts the network
``Q_B[co, p] b[n, g, co, o] a[n, g, j, o] Q_A[j, q]`` in the cheaper of two orders (docs/reference.md §8):

- *gradient first* — ``G_n = Σ_o b aᵀ`` (for a convolution the per-sample weight VJP
  ``x Π b`` by tnconv's tensor-network engine, without unfolding ``x``), then the two small
  rotations: ``N·(c·d·|O| + c²d + cd²)`` multiply-adds;
- *rotate first* — ``ã = Q_Aᵀ a`` and ``b̃ = Q_Bᵀ b`` at every position, then
  ``Σ_o b̃ ãᵀ``: ``N·|O|·(d² + c² + cd)``, cheaper when ``|O|`` is small against ``d``.

The squares are summed into ``S`` and every per-vector tensor is released; per-sample
gradients of all vectors are never held together. The rotated per-sample gradients of one
vector are formed, squared (in place) and summed in chunks of samples of at most
:data:`chunk_bytes` each (at least one sample), so that a wide layer's ``[N, G, C_out/G, d]``
never exists at once (ResNet-18's ``512 × 4608`` layers at batch 8: 75 MB, and as much again
for its square, when formed whole).

What is live at once
--------------------
Without an EMA (``ema=None``) and with ``nonfinite="raise"`` an update replaces the factors,
eigenbases and corrections, so :meth:`EKFAC.update` releases the old ones before it forms
the new ones (as :class:`~tnconv.kfac.KFAC` does for its factors): one set of factors and
bases is live, never two. With an EMA, or ``nonfinite="skip"``, the old ones survive until
they are replaced (an EMA reads the old factors and corrections; a skipped update must leave
them as they were). Inverses from :meth:`EKFAC.invert` hold the bases they were made from
(``precondition(refresh=False)`` and the optimizer's ``T_inv`` reuse them), so they keep an
old basis alive until the next :meth:`EKFAC.invert`.

Example:
    >>> import torch, tnconv
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> ekfac = tnconv.kfac.EKFAC(model, torch.nn.CrossEntropyLoss(), approx="reduce", damping=1e-2)
    >>> x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> loss = ekfac.update(x, y)
    >>> ekfac.corrections["0"].shape, ekfac.corrections["2"].shape     # [G, C_out/G, d]
    (torch.Size([1, 4, 10]), torch.Size([1, 3, 17]))
    >>> model.zero_grad(); torch.nn.CrossEntropyLoss()(model(x), y).backward()
    >>> ekfac.precondition()              # in place on .grad
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .core import KFAC, GradHook, KroneckerFactors, factor_eigh
from .distributed import all_reduce_mean, invert_distributed
from .layers import KroneckerLayer
from .operator import eigen_blocks
from .per_sample import per_sample_gradients

ORDERS = ("auto", "gradient", "rotate")
#: contraction order of the corrections: ``"auto"`` (cheapest), or one forced (tests use it)
order = "auto"
#: at most this many bytes of rotated per-sample gradients exist at once (at least one
#: sample's); tests set it to 1 to force one sample per chunk
chunk_bytes = 8 * 2**20


@dataclass
class EigenBasis:
    """The eigenvectors of one layer's factors, per group: ``A_eigvecs [G, d, d]``,
    ``B_eigvecs [G, C_out/G, C_out/G]``."""

    A_eigvecs: torch.Tensor
    B_eigvecs: torch.Tensor


@dataclass
class EigenCorrectedInverse:
    """``Γ ↦ Q_B ((Q_Bᵀ Γ Q_A) / (S + λ)) Q_Aᵀ`` for one layer (``[G, C_out/G, d]``)."""

    A_eigvecs: torch.Tensor
    B_eigvecs: torch.Tensor
    corrections: torch.Tensor
    damping: float

    def apply(self, gradient: torch.Tensor) -> torch.Tensor:
        qa, qb = self.A_eigvecs, self.B_eigvecs
        rotated = qb.transpose(1, 2) @ gradient.to(qa.dtype) @ qa
        return qb @ (rotated / (self.corrections.to(qa.dtype) + self.damping)) @ qa.transpose(1, 2)


def rotated_gradient_squares(
    layer: KroneckerLayer,
    inputs: torch.Tensor,
    output_shape: torch.Tensor,
    grad: torch.Tensor,
    basis: EigenBasis,
) -> torch.Tensor:
    """``Σ_n (Q_Bᵀ G_n Q_A)²``: ``[G, C_out/G, d]`` for one output gradient (cheapest order).

    Args:
        layer: the layer's adapter.
        inputs: its input (as in the forward pass).
        output_shape: its output (only the shape is read).
        grad: the gradient w.r.t. its output, shaped like the output.
        basis: eigenvectors of the layer's factors (dtype of the computation).
    """
    qa, qb = basis.A_eigvecs, basis.B_eigvecs
    dtype = qa.dtype
    x, g = inputs.to(dtype), grad.to(dtype)
    _, d, c = qa.shape[0], qa.shape[-1], qb.shape[-1]
    b = layer.grad_columns(g)  # [N, G, c, O]
    positions = b.shape[-1]
    gradient_first = c * d * positions + c * c * d + c * d * d
    rotate_first = positions * (d * d + c * c + c * d)
    if order not in ORDERS:
        raise ValueError(f"tnconv.kfac.ekfac.order must be one of {ORDERS}, got {order!r}")
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool) or chunk_bytes < 1:
        raise ValueError(f"tnconv.kfac.ekfac.chunk_bytes must be a positive int, got {chunk_bytes!r}")
    if order == "rotate" or (order == "auto" and rotate_first < gradient_first):
        a = layer.unfolded(x, output_shape)  # [N, G, d, O]
        a_rot = torch.einsum("ngjo,gjq->ngoq", a, qa)
        del a
        b_rot = torch.einsum("ngco,gcp->ngpo", b, qb)

        def rotate(s: slice) -> torch.Tensor:
            return b_rot[s] @ a_rot[s]  # [n, G, c, d]

    else:
        per_sample = per_sample_gradients(layer, x, output_shape, g)  # [N, G, c, d] (no larger than a)
        qb_t, qa_1 = qb.transpose(1, 2).unsqueeze(0), qa.unsqueeze(0)

        def rotate(s: slice) -> torch.Tensor:
            return qb_t @ per_sample[s] @ qa_1

    samples = b.shape[0]
    step = max(1, chunk_bytes // (qa.shape[0] * c * d * qa.element_size()))
    total = qa.new_zeros(qa.shape[0], c, d) if samples == 0 else None
    for start in range(0, samples, step):
        rotated = rotate(slice(start, start + step))
        part = rotated.mul_(rotated).sum(0)  # squared in place: no second chunk-sized buffer
        del rotated
        total = part if total is None else total.add_(part)
    assert total is not None
    return total


class EKFAC(KFAC):
    """Eigenvalue-corrected KFAC: the constructor, :meth:`update`, :meth:`precondition`,
    :meth:`invert` and the operator algebra are :class:`~tnconv.kfac.KFAC`'s (``inverse``
    and ``pi_correction`` do not apply: damping is always added to the corrections).

    Args:
        keep_factors: keep the KFAC factors in :attr:`factors` after an update (``True``, the
            default) or release each one as soon as its eigenbasis is formed (``False``; needs
            ``ema=None``, since an EMA reads the old factors). Preconditioning and the operator
            algebra need only the bases and corrections, and dense factors are as large as the
            bases (ResNet-18: 359 MB of float32 each; factors held as roots, see
            :class:`~tnconv.kfac.KroneckerFactors`, are far smaller); curvlinops'
            ``EKFACLinearOperator``, too, drops its factors once decomposed. :attr:`factors`
            is then empty.
        The other arguments are :class:`~tnconv.kfac.KFAC`'s.

    Attributes:
        corrections: ``{layer name: S [G, C_out/G, d]}`` after the first :meth:`update`.
        eigenbases: ``{layer name: EigenBasis}`` of the factors of the last update.
    """

    def __init__(self, *args, keep_factors: bool = True, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if kwargs.get("inverse", "eigen") != "eigen" or kwargs.get("pi_correction", False):
            raise ValueError("EKFAC adds the damping to its corrections: inverse must be 'eigen', pi_correction False")
        if not isinstance(keep_factors, bool):
            raise TypeError(f"keep_factors must be a bool, got {type(keep_factors).__name__}")
        super().__init__(*args, **kwargs)
        if not keep_factors and self.ema is not None:
            raise ValueError("keep_factors=False needs ema=None: the EMA of the factors reads the old ones")
        self.keep_factors = keep_factors
        self.corrections: dict[str, torch.Tensor] = {}
        self.eigenbases: dict[str, EigenBasis] = {}

    def _basis_of(self, factors: KroneckerFactors) -> EigenBasis:
        (_, A_eigvecs), (_, B_eigvecs) = factor_eigh(factors, self.inverse_dtype)
        return EigenBasis(A_eigvecs, B_eigvecs)

    def _bases(self, factors: dict[str, KroneckerFactors], release: bool = False) -> dict[str, EigenBasis]:
        """The eigenbases of ``factors`` (an input factor's from its root where it has one);
        ``release``: drop each layer's entry from ``factors`` once its basis is formed (the
        caller holds no other reference), so that all the factors and all the bases are
        never live together."""
        if not self._distributed():
            bases = {}
            for name in list(factors):
                bases[name] = self._basis_of(factors[name])
                if release:
                    del factors[name]
            return bases

        def template(name: str) -> EigenBasis:
            f = factors[name]
            groups, d, c = f.sizes
            dtype = self.inverse_dtype or f.B.dtype
            return EigenBasis(torch.empty(groups, d, d, dtype=dtype), torch.empty(groups, c, c, dtype=dtype))

        bases = invert_distributed(
            list(factors), lambda n: factors[n].eigh_cost, lambda n: self._basis_of(factors[n]), template
        )
        if release:
            factors.clear()
        return bases

    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """KFAC factors, their eigenbases, then the corrections on the same batch and vectors.

        Two forward passes and ``2M`` backward passes (``M`` vectors); see the module docs.
        Returns the loss (detached).
        """
        if self.ema is None and self.nonfinite == "raise":
            # replaced by this update anyway (as the factors, which _factor_pass releases): gone
            # before the new factors and bases exist, they never add to their peak (module docs)
            self.eigenbases.clear()
            self.corrections.clear()
        result = self._factor_pass(inputs, targets)
        if result is None:
            return self._last_loss
        new, vectors, _ = result
        del result
        merged = self._merged(new)
        del new  # merged holds the same factors: released with it (keep_factors=False)
        bases = self._bases(merged, release=not self.keep_factors)
        squares = self._correction_pass(inputs, vectors, bases)
        if self._distributed():
            names = sorted(squares)
            averaged = all_reduce_mean([squares[n] for n in names])
            squares = dict(zip(names, averaged))
        if not self._check_finite({n: (s,) for n, s in squares.items()}, "EKFAC corrections"):
            return self._last_loss
        for name, s in squares.items():
            old = self.corrections.get(name)
            if self.ema is not None and old is not None:
                s = self.ema * old + (1 - self.ema) * s
            self.corrections[name] = s
        if self.keep_factors:
            self._store(merged, merged=True)
        else:
            self.factors.clear()
            self._stale = True
        self.eigenbases.update(bases)
        return self._last_loss

    def _correction_pass(
        self, inputs: torch.Tensor, vectors: torch.Tensor, bases: dict[str, EigenBasis]
    ) -> dict[str, torch.Tensor]:
        sums: dict[str, torch.Tensor] = {}

        def on_forward(name: str, x: torch.Tensor, y: torch.Tensor) -> GradHook | None:
            if name not in bases:
                return None
            layer, basis = self.layers[name], bases[name]
            shape_only = y.new_zeros(()).expand(y.shape)  # the shape, without keeping y

            def on_grad(grad: torch.Tensor) -> None:
                part = rotated_gradient_squares(layer, x, shape_only, grad, basis)
                sums[name] = part if name not in sums else sums[name].add_(part)

            return on_grad

        output, anchor, _ = self._hooked_forward(inputs, on_forward)
        self._backward(output, anchor, vectors)
        for name, basis in bases.items():
            if name not in sums:  # the output does not depend on this layer
                groups, d, c = basis.A_eigvecs.shape[0], basis.A_eigvecs.shape[-1], basis.B_eigvecs.shape[-1]
                sums[name] = basis.A_eigvecs.new_zeros(groups, c, d)
        return {name: sums[name] for name in bases}

    def _curvature_names(self) -> list[str]:
        """The layers with eigenbases and corrections (the factors may be released)."""
        return [name for name in self.eigenbases if name in self.corrections]

    def _forward_blocks(self) -> dict[str, object]:
        bases = {n: (b.A_eigvecs, b.B_eigvecs) for n, b in self.eigenbases.items()}
        return eigen_blocks(bases, {n: self.corrections[n] for n in self._curvature_names()})

    def _inverse_blocks(self, damping: float) -> dict[str, object]:
        bases = {n: (b.A_eigvecs, b.B_eigvecs) for n, b in self.eigenbases.items()}
        return eigen_blocks(bases, {n: 1.0 / (self.corrections[n] + damping) for n in self._curvature_names()})

    def _invert_one(self, name: str) -> EigenCorrectedInverse:  # type: ignore[override]
        basis = self.eigenbases[name]
        return EigenCorrectedInverse(basis.A_eigvecs, basis.B_eigvecs, self.corrections[name], self.damping)

    def invert(self) -> None:
        """Package the eigenbases and corrections with the damping (no decomposition needed:
        :meth:`update` computed the eigenbases)."""
        self._require_factors("invert")
        for name in self._curvature_names():
            self.inverses[name] = self._invert_one(name)  # type: ignore[assignment]
        self._stale = False
