"""KFAC for a whole network: Kronecker factors of every layer, their damped inverses, and
preconditioned gradients.

How the factors are normalised
------------------------------
Write the loss as ``L = R · Σ_n ℓ_n`` (``R = 1/N`` for a mean-reduced cross-entropy,
``1/numel(output)`` for a mean-reduced MSE, ``1`` for ``reduction="sum"``; see
:mod:`tnconv.kfac.loss`) and a supported layer's group ``g`` as ``y = W_g a`` at every
output position ``o`` (see :mod:`tnconv.kfac.layers`). Its curvature block — the GGN
(``fisher="type-2"``; equal to the Fisher for these losses), its Monte-Carlo estimate
(``"mc"``) or the empirical Fisher (``"empirical"``) *of L as reduced by the loss* — over
the row-major flattening of ``W_g = [weight_g | bias_g]`` is approximated by
``torch.kron(B_g, A_g)`` (``A ⊗ B`` in the column-major ``vec`` of the literature), with

- ``A`` normalised as docs/reference.md §3: ``expand`` ``(1/N)·Σ_{n,o} a aᵀ``, ``reduce``
  ``(1/(N|O|²))·Σ_n (Σ_o a)(Σ_o a)ᵀ`` — a mean over samples, independent of the loss;
- ``B`` built from the output gradients ``b`` of the backpropagated vectors, which carry
  ``√R`` (so the reduction of the loss, e.g. the ``1/N`` of a mean, lives in ``B``):
  ``expand`` ``(1/|O|)·Σ_{n,o} b bᵀ``, ``reduce`` ``Σ_n (Σ_o b)(Σ_o b)ᵀ``.

The split of ``|O|`` between the factors follows KFC (Grosse & Martens, 2016); the
product equals Eschenhagen et al.'s (2023) ``(1/(N|O|))Σ aaᵀ ⊗ Σ bbᵀ`` for expand and
``(1/N)Σ âaᵀ ⊗ Σ b̂b̂ᵀ`` (``â`` the mean, ``b̂`` the sum over positions) for reduce, so it
is exact where they prove exactness (tests/test_kfac_model.py). For a mean-reduced loss
both factors are means over samples, so the factors of equal shares of a batch, averaged
over processes, are the factors of the whole batch.

Example:
    >>> import torch, tnconv
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> kfac = tnconv.kfac.KFAC(model, torch.nn.CrossEntropyLoss(), approx="reduce")
    >>> x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> loss = kfac.update(x, y)
    >>> kfac.factors["0"].A.shape, kfac.factors["0"].B.shape, kfac.factors["2"].A.shape
    (torch.Size([1, 10, 10]), torch.Size([1, 4, 4]), torch.Size([17, 17]))
    >>> model.zero_grad(); torch.nn.CrossEntropyLoss()(model(x), y).backward()
    >>> kfac.precondition()              # in place on .grad

How the factors are computed (streaming)
----------------------------------------
:meth:`KFAC.update` runs one forward pass and one backward pass per backpropagated vector.
A forward hook forms each layer's ``A`` as soon as the layer's input is seen; a tensor hook
on the layer's output adds each arriving output gradient's contribution to ``B`` (both
factors are sums over the vectors) and drops the gradient. Nothing per vector is kept, so
the peak memory is that of the forward pass plus one backward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .distributed import all_reduce_mean, invert_distributed, is_distributed
from .eigenbasis import eigh_from_root, input_root, keeps_root, merge_roots, root_route_cheaper, root_rows
from .inverse import INVERSE_MODES, KroneckerInverse, check_damping, damped_inverse
from .layers import APPROXIMATIONS, KroneckerLayer, LinearLayer, kronecker_layer
from .loss import FISHER_TYPES, backprop_vectors, check_loss_fn, check_targets
from .memory import RELEASE_MIN_BYTES, release_freed_memory
from .operator import CurvatureOperator, Vector, eigen_blocks, kfac_blocks

NONFINITE = ("raise", "skip")

GradHook = Callable[[torch.Tensor], None]


class NonFiniteError(ValueError):
    """A non-finite loss or Kronecker factor in :meth:`KFAC.update` (the message names it)."""


class KroneckerFactors:
    """The factors of one layer: ``A`` (input) and ``B`` (output gradient).

    ``torch.nn.Linear``: ``A [d, d]``, ``B [C_out, C_out]``. Convolutions:
    ``A [G, d, d]``, ``B [G, C_out/G, C_out/G]``. ``d`` counts a trailing constant feature
    when the layer has a bias.

    ``A`` may be held as a *root* ``R`` with ``A = Rᵀ R`` (``[G, r, d]``; ``[r, d]`` for a
    ``Linear``) when it has few rows (``r ≤ d/2``: KFAC-reduce has one row per sample, so a
    deep layer's ``A`` of ``d = 4608`` at batch 64 has rank 64). Then :attr:`A` is formed
    on first access (and kept), and the eigendecomposition of ``A`` comes from ``R``
    (:mod:`tnconv.kfac.eigenbasis`) without forming it; ``root`` is ``None`` otherwise.

    >>> R = torch.randn(1, 2, 5)
    >>> f = KroneckerFactors(B=torch.eye(3).unsqueeze(0), root=R)
    >>> f.A_shape, f.formed, torch.allclose(f.A, R.transpose(1, 2) @ R), f.formed
    (torch.Size([1, 5, 5]), False, True, True)
    """

    def __init__(
        self, A: torch.Tensor | None = None, B: torch.Tensor | None = None, *, root: torch.Tensor | None = None
    ) -> None:
        if B is None or (A is None and root is None):
            raise TypeError("KroneckerFactors needs B and one of A or root")
        self._A, self.B, self.root = A, B, root

    @property
    def A(self) -> torch.Tensor:
        """The input factor (formed from :attr:`root` on first access)."""
        if self._A is None:
            assert self.root is not None
            self._A = self.root.transpose(-1, -2) @ self.root
        return self._A

    @A.setter
    def A(self, value: torch.Tensor) -> None:
        self._A, self.root = value, None

    @property
    def formed(self) -> bool:
        """Whether :attr:`A` exists as a tensor (``False`` while only its root does)."""
        return self._A is not None

    @property
    def A_shape(self) -> torch.Size:
        """``A``'s shape, without forming it."""
        if self._A is not None:
            return self._A.shape
        assert self.root is not None
        d = self.root.shape[-1]
        return torch.Size((*self.root.shape[:-2], d, d))

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(G, d, c)``: groups (1 for a ``Linear``), ``A``'s and ``B``'s side, without forming ``A``."""
        shape = self.A_shape
        return shape[0] if len(shape) == 3 else 1, shape[-1], self.B.shape[-1]

    @property
    def eigh_cost(self) -> int:
        """``G·(d³ + c³)``: the cost of decomposing both factors (to balance work across processes)."""
        groups, d, c = self.sizes
        return groups * (d**3 + c**3)

    def __repr__(self) -> str:
        held = f"root={tuple(self.root.shape)}" if self.root is not None and self._A is None else ""
        return f"KroneckerFactors(A={tuple(self.A_shape)}, B={tuple(self.B.shape)}{', ' + held if held else ''})"


@dataclass
class _Stream:
    """What the hooks of one update pass accumulate for one layer (no per-vector tensors)."""

    A: torch.Tensor | None = None
    #: the root of ``A`` instead of ``A`` (see :class:`KroneckerFactors`)
    root: torch.Tensor | None = None
    B: torch.Tensor | None = None
    output_shape: tuple[int, ...] | None = None
    dtype: torch.dtype | None = None
    #: the layer's input and output (detached) until ``A`` is formed from them
    pending: tuple[torch.Tensor, torch.Tensor, int] | None = None
    #: form ``A`` after the backward passes (holding the input is cheaper than holding ``A``)
    deferred: bool = False
    #: bytes of what the update forms for ``A`` (``A`` or its root)
    factor_bytes: int = 0


def _finite_probes(factors: KroneckerFactors) -> tuple[torch.Tensor, ...]:
    """Tensors that are finite exactly when both factors are: ``B``, and ``A`` or, for a
    root ``R``, the diagonal of ``Rᵀ R`` (``|A_ij| ≤ √(A_ii A_jj)``, so ``A`` is finite iff
    its diagonal is), without forming ``A``."""
    if factors.formed:
        return factors.A, factors.B
    assert factors.root is not None
    return factors.root.square().sum(-2), factors.B


def _root_route(factors: KroneckerFactors) -> bool:
    """Whether ``A``'s eigendecomposition is cheaper from its root than by a dense ``eigh``."""
    root = factors.root
    return root is not None and root_route_cheaper(root.shape[-1], root.shape[-2])


def factor_eigh(
    factors: KroneckerFactors, dtype: torch.dtype | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((α, Q_A), (β, Q_B))``: eigenvalues (clamped at 0) and eigenvectors of both factors,
    grouped (``[G, d]``, ``[G, d, d]``, ``[G, c]``, ``[G, c, c]``), in ``dtype`` (``None``: the
    factors'). ``A``'s come from its root where that is cheaper (not then in ascending order)."""
    B = factors.B if factors.B.dim() == 3 else factors.B.unsqueeze(0)
    dtype = dtype or B.dtype
    if _root_route(factors):
        root = factors.root
        assert root is not None
        a_vals, a_vecs = eigh_from_root((root if root.dim() == 3 else root.unsqueeze(0)).to(dtype))
    else:
        A = factors.A if factors.A.dim() == 3 else factors.A.unsqueeze(0)
        a_vals, a_vecs = torch.linalg.eigh(A.to(dtype))
    b_vals, b_vecs = torch.linalg.eigh(B.to(dtype))
    # round-off can leave tiny negative eigenvalues of a PSD factor
    return (a_vals.clamp(min=0), a_vecs), (b_vals.clamp(min=0), b_vecs)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel``: KFAC's passes are local."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


class KFAC:
    """Kronecker-factored curvature of every ``Linear``, convolution and transposed
    convolution of a model, with damped inverses and preconditioning.

    Args:
        model: the network (``DistributedDataParallel``/``DataParallel`` are unwrapped;
            layer names are those of ``named_modules()`` of the inner module).
        loss_fn: ``torch.nn.CrossEntropyLoss``, ``torch.nn.MSELoss`` or
            ``torch.nn.BCEWithLogitsLoss`` (``reduction`` mean or sum); it defines the
            predictive distribution and the reduction ``R`` (see :mod:`tnconv.kfac.loss`).
        approx: ``"expand"`` (KFC) or ``"reduce"`` (KFAC-reduce).
        fisher: ``"type-2"`` (GGN: one backward pass per column of the loss Hessian's
            square root), ``"mc"`` (``mc_samples`` sampled targets) or ``"empirical"``.
        damping: ``λ > 0`` (finite); see ``inverse``.
        ema: ``None`` (each update replaces the factors) or ``β ∈ [0, 1)``: factors become
            ``β·old + (1 − β)·new`` (the first update sets them).
        pi_correction: π-correction of factor-wise damping (needs ``inverse="factor"``).
        inverse: ``"eigen"`` preconditions with ``(B ⊗ A + λI)⁻¹`` exactly (eigendecompositions
            of both factors); ``"factor"`` with ``(B + (√λ/π)I)⁻¹ ⊗ (A + π√λI)⁻¹``.
        mc_samples: samples per input for ``fisher="mc"``.
        generator: random generator for ``fisher="mc"``.
        distributed: average new factors over processes with bucketed ``all_reduce`` and
            compute each layer's inverse on one process (cost-balanced), broadcasting it;
            ``None`` means whenever a ``torch.distributed`` process group with several
            processes runs.
        inverse_dtype: dtype of the eigendecompositions / inverses (``None``: the factors');
            the default ``float64`` keeps ``eigh`` stable on rank-deficient ``float32`` factors.
        factor_dtype: dtype the factors are computed and kept in (``None``: the layer
            inputs'), e.g. ``torch.float32`` for a model run in ``bfloat16``.
        nonfinite: ``"raise"``: a non-finite loss or factor raises :class:`NonFiniteError`
            naming the loss or the layer; ``"skip"``: the update is skipped with a warning
            (the stored factors stay as they were).

    Attributes:
        factors: ``{layer name: KroneckerFactors}`` after the first :meth:`update`; an input
            factor with a short root (at most ``d/2`` rows) is held as that root and formed
            on first access of ``.A`` (see :class:`KroneckerFactors`).
        inverses: ``{layer name: KroneckerInverse}`` (eigendecompositions or damped
            inverses) after :meth:`invert`.
        layers: ``{layer name: KroneckerLayer}``, the layers KFAC preconditions.

    Layers with trainable parameters that KFAC does not know (normalisation layers, …)
    keep their plain gradients; the constructor lists them in one warning.

    The curvature is also a linear operator over the layers' parameters (see
    :mod:`tnconv.kfac.operator`): ``kfac @ v``, ``kfac.inverse_operator()``, ``kfac.trace()``, …
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        approx: str = "expand",
        fisher: str = "type-2",
        damping: float = 1e-3,
        ema: float | None = None,
        pi_correction: bool = False,
        *,
        inverse: str = "eigen",
        mc_samples: int = 1,
        generator: torch.Generator | None = None,
        distributed: bool | None = None,
        inverse_dtype: torch.dtype | None = torch.float64,
        factor_dtype: torch.dtype | None = None,
        nonfinite: str = "raise",
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.loss_fn = check_loss_fn(loss_fn)
        if approx not in APPROXIMATIONS:
            raise ValueError(f"approx must be one of {APPROXIMATIONS}, got {approx!r}")
        if fisher not in FISHER_TYPES:
            raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
        if inverse not in INVERSE_MODES:
            raise ValueError(f"inverse must be one of {INVERSE_MODES}, got {inverse!r}")
        damping = check_damping(damping)
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1):
            raise ValueError(f"ema must be None or a number in [0, 1), got {ema!r}")
        if pi_correction and inverse != "factor":
            raise ValueError("pi_correction=True applies to factor-wise damping: use inverse='factor'")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive int, got {mc_samples!r}")
        if factor_dtype is not None and (
            not isinstance(factor_dtype, torch.dtype) or not factor_dtype.is_floating_point
        ):
            raise TypeError(f"factor_dtype must be None or a floating-point torch.dtype, got {factor_dtype!r}")
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        self.model = _unwrap(model)
        self.approx, self.fisher, self.damping, self.ema = approx, fisher, damping, ema
        self.pi_correction, self.inverse, self.mc_samples = pi_correction, inverse, mc_samples
        self.generator, self.distributed, self.inverse_dtype = generator, distributed, inverse_dtype
        self.factor_dtype, self.nonfinite = factor_dtype, nonfinite
        self.layers, unknown = self._find_layers(self.model)
        if unknown:
            warnings.warn(
                f"KFAC skips {len(unknown)} layer(s) with parameters it does not know; they keep their plain "
                f"gradients: {', '.join(unknown)}",
                UserWarning,
                stacklevel=2,
            )
        self.factors: dict[str, KroneckerFactors] = {}
        self.inverses: dict[str, KroneckerInverse] = {}
        self._stale = False

    @staticmethod
    def _find_layers(model: torch.nn.Module) -> tuple[dict[str, KroneckerLayer], list[str]]:
        layers, unknown = {}, []
        for name, module in model.named_modules():
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                continue
            layer = kronecker_layer(module)
            if layer is None:
                unknown.append(f"{name or '<model>'} ({type(module).__name__})")
            elif module.weight.requires_grad:
                layers[name] = layer
        return layers, unknown

    # ------------------------------------------------------------------ passes

    def _distributed(self) -> bool:
        return self.distributed is not False and is_distributed()

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.factor_dtype is None else tensor.to(self.factor_dtype)

    def _hooked_forward(
        self,
        inputs: torch.Tensor,
        on_forward: Callable[[str, torch.Tensor, torch.Tensor], GradHook | None],
    ) -> tuple[torch.Tensor, torch.Tensor, set[str]]:
        """Forward pass with hooks: ``on_forward(name, input, output)`` runs as each layer is
        seen and returns the hook that receives that layer's output gradients (or ``None``).

        Returns the output, the anchor (zero added to every tapped layer output: asking
        autograd for its gradient visits each tap without computing any weight gradient) and
        the names of the layers seen.
        """
        anchor = torch.zeros((), requires_grad=True)
        seen: set[str] = set()

        def tap(name: str):  # type: ignore[no-untyped-def]
            def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
                if name in seen:
                    raise RuntimeError(
                        f"layer {name!r} ran twice in one forward pass; KFAC supports one call per layer and pass"
                    )
                seen.add(name)
                grad_hook = on_forward(name, args[0].detach(), output.detach())
                if grad_hook is None or not output.requires_grad:
                    return None
                tapped = output + anchor
                tapped.register_hook(grad_hook)  # sees the gradient before any in-place op
                return tapped

            return hook

        handles = [layer.module.register_forward_hook(tap(name)) for name, layer in self.layers.items()]
        try:
            with torch.enable_grad():
                output = self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        return output, anchor, seen

    @staticmethod
    def _backward(
        output: torch.Tensor, anchor: torch.Tensor, vectors: torch.Tensor, before_last: Callable[[], None] | None = None
    ) -> None:
        """One backward pass per vector, to the layer outputs only (``before_last()`` runs
        before the last one)."""
        if not output.requires_grad:
            return
        for m in range(vectors.shape[0]):
            if m == vectors.shape[0] - 1 and before_last is not None:
                before_last()
            torch.autograd.grad(output, anchor, vectors[m], retain_graph=m < vectors.shape[0] - 1, allow_unused=True)

    def _check_loss(self, loss: torch.Tensor) -> bool:
        """``True`` when the loss is finite; otherwise raise or (``nonfinite="skip"``) warn."""
        if bool(torch.isfinite(loss).all()):
            return True
        message = f"the loss ({type(self.loss_fn).__name__}) is not finite ({loss.item()})"
        if self.nonfinite == "raise":
            raise NonFiniteError(message + "; pass nonfinite='skip' to skip such updates")
        warnings.warn(message + ": update skipped, factors unchanged", RuntimeWarning, stacklevel=3)
        return False

    def _check_finite(self, tensors: Mapping[str, Sequence[torch.Tensor]], what: str) -> bool:
        """``True`` when every tensor is finite; otherwise raise or warn, naming the layer."""
        # one read per tensor: a NaN or inf anywhere makes the sum non-finite
        bad = [name for name, ts in tensors.items() if not all(bool(torch.isfinite(t.sum())) for t in ts)]
        if not bad:
            return True
        message = f"non-finite {what} of layer(s) {', '.join(repr(b) for b in bad)}"
        if self.nonfinite == "raise":
            raise NonFiniteError(message + "; pass nonfinite='skip' to skip such updates")
        warnings.warn(message + ": update skipped, factors unchanged", RuntimeWarning, stacklevel=3)
        return False

    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(Re)compute the factors of every layer on one batch, streaming.

        Runs one forward pass (hooks keep each layer's input, which autograd holds anyway)
        and one backward pass per backpropagated vector (type-2: ``C`` for cross-entropy,
        the number of output entries per sample for MSE/BCE; MC: ``mc_samples``;
        empirical: one), which compute gradients w.r.t. layer outputs only; each gradient
        is folded into ``B`` on arrival and released, and in the last pass each layer's
        ``A`` is formed when its gradient arrives (while the graph behind it is being
        freed). Parameter ``.grad`` s are not touched.

        Args:
            inputs: the model's input batch.
            targets: the targets ``loss_fn`` takes.

        Returns:
            The loss on the batch (detached). With ``nonfinite="skip"`` a non-finite loss or
            factor leaves the stored factors unchanged (and warns).
        """
        result = self._factor_pass(inputs, targets)
        if result is None:
            return self._last_loss
        new, _, _ = result
        self._store(new)
        return self._last_loss

    def _factor_pass(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[dict[str, KroneckerFactors], torch.Tensor, set[str]] | None:
        """New factors (validated, not stored), the backpropagated vectors and the layers seen;
        ``None`` when the update is skipped."""
        streams = {name: _Stream() for name in self.layers}
        if self.ema is None and self.nonfinite == "raise":
            # the old factors are replaced anyway: release them before the new ones exist
            # (with nonfinite="skip" they must survive a skipped update)
            self.factors.clear()

        last = [False]  # set before the last backward pass

        def form_A(name: str) -> None:
            stream = streams[name]
            if stream.pending is None:
                return
            x, y, version = stream.pending
            stream.pending = None
            if x._version != version:
                raise RuntimeError(
                    f"the input of layer {name!r} was modified in place after the layer ran; KFAC reads it "
                    "during the backward pass"
                )
            stream.A, stream.root = self._input_factor(name, self._cast(x), y)

        def on_forward(name: str, x: torch.Tensor, y: torch.Tensor) -> GradHook:
            stream, layer = streams[name], self.layers[name]
            # A is formed in the last backward pass, when this layer's output gradient
            # arrives: the activations of the layers behind it are being released by then,
            # and the input is held by autograd (for the weight's backward) anyway
            stream.pending = (x, y.new_empty(()).expand(y.shape), x._version)  # y: its shape only
            stream.output_shape, stream.dtype = tuple(y.shape), self.factor_dtype or y.dtype
            # a deep layer's input is small and its A large: formed while the graph still
            # holds the activations of all the layers before it, A would add to their peak
            stream.factor_bytes = self._input_factor_bytes(layer, y, stream.dtype.itemsize)
            stream.deferred = x.numel() * x.element_size() < stream.factor_bytes

            def on_grad(grad: torch.Tensor) -> None:
                part = layer.output_factor(self._cast(grad).unsqueeze(0), self.approx)
                stream.B = part if stream.B is None else stream.B.add_(part)
                del part
                if last[0] and not stream.deferred:
                    form_A(name)

            return on_grad

        output, anchor, seen = self._hooked_forward(inputs, on_forward)
        check_targets(self.loss_fn, output, targets)
        with torch.no_grad():
            loss = self.loss_fn(output, targets)
        self._last_loss = loss.detach()
        if not self._check_loss(loss):
            return None
        vectors = backprop_vectors(self.loss_fn, output, targets, self.fisher, self.mc_samples, self.generator)
        self._backward(output, anchor, vectors, before_last=lambda: last.__setitem__(0, True))
        del output, anchor
        # the graph's activations are free now: hand them back before the deferred factors
        # are allocated, so the resident peak is not their sum (see tnconv.kfac.memory) —
        # unless those are small (roots, small factors): they then reuse the freed heap, and
        # a release would only make the next forward pass fault its pages back in
        if sum(streams[n].factor_bytes for n in seen if streams[n].pending is not None) >= RELEASE_MIN_BYTES:
            release_freed_memory()
        for name in seen:  # deferred layers, and those no gradient reached (or a model without a graph)
            form_A(name)
        new = {}
        for name in seen:
            stream, layer = streams[name], self.layers[name]
            A, root = stream.A, stream.root
            assert (A is not None or root is not None) and stream.output_shape is not None
            B = stream.B
            if B is None:  # the output does not depend on this layer
                device = (A if A is not None else root).device  # type: ignore[union-attr]
                zeros = torch.zeros((1, *stream.output_shape), dtype=stream.dtype, device=device)
                B = layer.output_factor(zeros, self.approx)
            if isinstance(layer, LinearLayer):
                A, root, B = None if A is None else A[0], None if root is None else root[0], B[0]
            if root is not None:
                new[name] = KroneckerFactors(B=B.contiguous(), root=root.contiguous())
            else:
                new[name] = KroneckerFactors(A.contiguous(), B.contiguous())  # type: ignore[union-attr]
        new = {name: new[name] for name in self.layers if name in new}  # model order
        if not self._check_finite({n: _finite_probes(f) for n, f in new.items()}, "Kronecker factors"):
            return None
        return new, vectors, seen

    def _keeps_root(self, layer: KroneckerLayer, y: torch.Tensor) -> bool:
        """Whether this update holds the layer's ``A`` as its root (short enough, and no
        process group: the factors are averaged over processes as matrices)."""
        return not self._distributed() and keeps_root(root_rows(layer, y, self.approx), layer.input_dim)

    def _input_factor_bytes(self, layer: KroneckerLayer, y: torch.Tensor, itemsize: int) -> int:
        """Bytes of what an update forms for the layer's ``A``: its root, or ``A``."""
        if self._keeps_root(layer, y):
            return layer.groups * root_rows(layer, y, self.approx) * layer.input_dim * itemsize
        return layer.input_factor_bytes(itemsize)

    def _input_factor(
        self, name: str, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Layer ``name``'s ``(A, None)``, or ``(None, R)`` with its root ``R`` (``A = Rᵀ R``),
        from its (cast) input ``x`` (``y``: the output's shape)."""
        layer = self.layers[name]
        if self._keeps_root(layer, y):
            return None, input_root(layer, x, y, self.approx)
        return layer.input_factor(x, y, self.approx), None

    def _merged(self, new: dict[str, KroneckerFactors]) -> dict[str, KroneckerFactors]:
        """The factors :meth:`_store` would keep: averaged over processes, then the EMA."""
        if self._distributed():
            names = sorted(new)
            averaged = all_reduce_mean([t for n in names for t in (new[n].A, new[n].B)])
            averaged_new = {n: KroneckerFactors(averaged[2 * i], averaged[2 * i + 1]) for i, n in enumerate(names)}
            new = {n: averaged_new[n] for n in new}  # keep the model's order
        merged = {}
        for name, factors in new.items():
            old = self.factors.get(name)
            if self.ema is not None and old is not None:
                # in place in the new factors (this pass's own tensors): no factor-sized temporaries,
                # and the stored ones (which a caller may hold) stay untouched until replaced
                beta = self.ema
                factors.B.mul_(1 - beta).add_(old.B, alpha=beta)
                stacked = None
                if factors.root is not None and old.root is not None:
                    rows, d = factors.root.shape[-2] + old.root.shape[-2], old.root.shape[-1]
                    stacked = merge_roots(old.root, factors.root, beta) if keeps_root(rows, d) else None
                if stacked is not None:  # the root of β·A_old + (1 − β)·A_new
                    factors = KroneckerFactors(B=factors.B, root=stacked)
                else:
                    factors.A = factors.A.mul_(1 - beta).add_(old.A, alpha=beta)  # (drops a root)
            merged[name] = factors
        return merged

    def _store(self, new: dict[str, KroneckerFactors], merged: bool = False) -> None:
        self.factors.update(new if merged else self._merged(new))
        self._stale = True

    # ------------------------------------------------------------------ inverses

    def _curvature_names(self) -> list[str]:
        """The layers the stored curvature covers (those with factors)."""
        return list(self.factors)

    def _require_factors(self, method: str) -> None:
        if not self._curvature_names():
            raise RuntimeError(
                f"{type(self).__name__}.{method}() needs Kronecker factors: call update(inputs, targets) first"
            )

    def _invert_one(self, name: str) -> KroneckerInverse:
        factors = self.factors[name]
        if self.inverse == "eigen":  # (from A's root where it has a short one)
            (a_vals, a_vecs), (b_vals, b_vecs) = factor_eigh(factors, self.inverse_dtype)
            return KroneckerInverse("eigen", self.damping, a_vals, a_vecs, b_vals, b_vecs)
        A, B = factors.A, factors.B
        if A.dim() == 2:
            A, B = A.unsqueeze(0), B.unsqueeze(0)
        return damped_inverse(A, B, self.damping, self.inverse, self.pi_correction, self.inverse_dtype)

    def invert(self) -> None:
        """(Re)compute the damped inverse (or eigendecomposition) of every layer's factors.

        In a distributed run each layer is inverted on one process (a cost-balanced
        assignment) and broadcast to the others.
        """
        self._require_factors("invert")
        names = list(self.factors)
        if self._distributed():
            self.inverses.update(
                invert_distributed(names, self._inverse_cost, self._invert_one, self._inverse_template)
            )
        else:
            for name in names:
                self.inverses[name] = self._invert_one(name)
        self._stale = False

    def _inverse_cost(self, name: str) -> float:
        return self.factors[name].eigh_cost

    def _inverse_template(self, name: str) -> KroneckerInverse:
        """Empty tensors shaped like the inverse of ``name`` (to receive a broadcast)."""
        f = self.factors[name]
        groups, d, c = f.sizes
        dtype = self.inverse_dtype or f.B.dtype
        new = lambda *shape: torch.empty(shape, dtype=dtype, device=f.B.device)  # noqa: E731
        if self.inverse == "eigen":
            return KroneckerInverse(
                "eigen", self.damping, new(groups, d), new(groups, d, d), new(groups, c), new(groups, c, c)
            )
        return KroneckerInverse("factor", self.damping, A_inv=new(groups, d, d), B_inv=new(groups, c, c))

    # ------------------------------------------------------------------ operator algebra

    def operator(self) -> CurvatureOperator:
        """The curvature as a linear operator (see :mod:`tnconv.kfac.operator`)."""
        self._require_factors("operator")
        names = set(self._curvature_names())
        layers = {name: layer for name, layer in self.layers.items() if name in names}
        return CurvatureOperator(layers, self._forward_blocks(), self)

    def _forward_blocks(self) -> dict[str, object]:
        return kfac_blocks(self.factors, self.inverse_dtype)

    def _inverse_blocks(self, damping: float) -> dict[str, object]:
        """``(B ⊗ A + λI)⁻¹`` per layer, from fresh eigendecompositions."""
        bases, values = {}, {}
        for name, f in self.factors.items():
            (a_vals, a_vecs), (b_vals, b_vecs) = factor_eigh(f, self.inverse_dtype)
            bases[name] = (a_vecs, b_vecs)
            values[name] = 1.0 / (b_vals.unsqueeze(2) * a_vals.unsqueeze(1) + damping)
        return eigen_blocks(bases, values)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of the layers with factors, in the operator's order (weight, bias)."""
        return self.operator().parameters()

    def matvec(self, v: Vector) -> Vector:
        """``(B ⊗ A) v`` per layer; ``v`` a flat ``[P]``/``[P, K]`` tensor or a list shaped like :meth:`parameters`."""
        return self.operator().matvec(v)

    def __matmul__(self, v: Vector) -> Vector:
        return self.matvec(v)

    def inverse_operator(self, damping: float | None = None) -> CurvatureOperator:
        """The operator ``(curvature + λI)⁻¹`` (``λ``: ``damping`` or the object's; the
        attribute ``inverse`` is the preconditioning mode)."""
        return self.operator().inverse(damping)

    def trace(self) -> torch.Tensor:
        """Trace of the curvature."""
        return self.operator().trace()

    def logdet(self) -> torch.Tensor:
        """Log-determinant of the curvature (float64; ``-inf`` if singular)."""
        return self.operator().logdet()

    def det(self) -> torch.Tensor:
        """Determinant of the curvature."""
        return self.operator().det()

    def frobenius_norm(self) -> torch.Tensor:
        """Frobenius norm of the curvature."""
        return self.operator().frobenius_norm()

    # ------------------------------------------------------------------ preconditioning

    def precondition(
        self, grads: Mapping[str, torch.Tensor] | None = None, *, refresh: bool = True
    ) -> dict[str, torch.Tensor] | None:
        """Multiply gradients by the damped inverse curvature, layer by layer.

        Each layer's weight and bias gradients are one matrix ``[W_g | b_g]`` per group,
        mapped by ``(B ⊗ A + λI)⁻¹`` (``inverse="eigen"``) or by the factor-wise damped
        inverse (``"factor"``); see :mod:`tnconv.kfac.inverse`.

        Args:
            grads: ``None`` to precondition the ``.grad`` of the layers' parameters in place,
                or ``{parameter name: gradient}`` with the names of ``model.named_parameters()``
                (of the inner module for a ``DistributedDataParallel`` model);
                entries of layers KFAC does not precondition are returned unchanged.
            refresh: recompute the inverses first when the factors changed since the last
                :meth:`invert` (``False`` reuses them; layers never inverted are inverted).

        Returns:
            ``None`` (in place) or a new dict.

        Raises:
            RuntimeError: before the first :meth:`update`.
        """
        self._require_factors("precondition")
        if (refresh and self._stale) or any(name not in self.inverses for name in self._curvature_names()):
            self.invert()
        if grads is None:
            self._precondition_in_place()
            return None
        out = dict(grads)
        for name, layer in self.layers.items():
            prefix = f"{name}." if name else ""
            weight_key, bias_key = prefix + "weight", prefix + "bias"
            if name not in self.inverses or weight_key not in grads:
                continue
            bias = grads.get(bias_key)
            if layer.has_bias and bias is None:
                bias = torch.zeros_like(layer.module.bias)
            weight, new_bias = self._apply(name, grads[weight_key], bias)
            out[weight_key] = weight
            if bias_key in grads:
                out[bias_key] = new_bias
        return out

    def _precondition_in_place(self) -> None:
        for name, layer in self.layers.items():
            weight = layer.module.weight
            if name not in self.inverses or weight.grad is None:
                continue
            bias = layer.module.bias if layer.has_bias else None
            bias_grad = None
            if bias is not None:
                bias_grad = bias.grad if bias.grad is not None else torch.zeros_like(bias)
            new_weight, new_bias = self._apply(name, weight.grad, bias_grad)
            weight.grad.copy_(new_weight)
            if bias is not None and bias.grad is not None:
                bias.grad.copy_(new_bias)

    def _apply_matrix(self, name: str, matrix: torch.Tensor) -> torch.Tensor:
        """The damped inverse of layer ``name`` applied to ``[G, C_out/G, d]``."""
        return self.inverses[name].apply(matrix)

    def _apply(
        self, name: str, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer = self.layers[name]
        matrix = layer.to_matrix(weight_grad, bias_grad)
        new_weight, new_bias = layer.from_matrix(self._apply_matrix(name, matrix).to(weight_grad.dtype))
        return new_weight, new_bias
