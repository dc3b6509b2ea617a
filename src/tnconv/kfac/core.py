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
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .distributed import all_reduce_mean
from .inverse import INVERSE_MODES, KroneckerInverse, damped_inverse
from .layers import APPROXIMATIONS, KroneckerLayer, LinearLayer, kronecker_layer
from .loss import FISHER_TYPES, backprop_vectors, check_loss_fn


@dataclass
class KroneckerFactors:
    """The factors of one layer: ``A`` (input) and ``B`` (output gradient).

    ``torch.nn.Linear``: ``A [d, d]``, ``B [C_out, C_out]``. Convolutions:
    ``A [G, d, d]``, ``B [G, C_out/G, C_out/G]``. ``d`` counts a trailing constant feature
    when the layer has a bias.
    """

    A: torch.Tensor
    B: torch.Tensor


@dataclass
class _Capture:
    """What the hooks of one update pass record for one layer."""

    inputs: torch.Tensor | None = None
    output: torch.Tensor | None = None
    grads: list[torch.Tensor] | None = None


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
        loss_fn: ``torch.nn.CrossEntropyLoss`` or ``torch.nn.MSELoss`` (``reduction`` mean
            or sum); it defines the predictive distribution and the reduction ``R``.
        approx: ``"expand"`` (KFC) or ``"reduce"`` (KFAC-reduce).
        fisher: ``"type-2"`` (GGN: one backward pass per column of the loss Hessian's
            square root), ``"mc"`` (``mc_samples`` sampled targets) or ``"empirical"``.
        damping: ``λ ≥ 0``; see ``inverse``.
        ema: ``None`` (each update replaces the factors) or ``β ∈ [0, 1)``: factors become
            ``β·old + (1 − β)·new`` (the first update sets them).
        pi_correction: π-correction of factor-wise damping (needs ``inverse="factor"``).
        inverse: ``"eigen"`` preconditions with ``(B ⊗ A + λI)⁻¹`` exactly (eigendecompositions
            of both factors); ``"factor"`` with ``(B + (√λ/π)I)⁻¹ ⊗ (A + π√λI)⁻¹``.
        mc_samples: samples per input for ``fisher="mc"``.
        generator: random generator for ``fisher="mc"``.
        distributed: average new factors over processes with ``all_reduce``; ``None``
            means whenever a ``torch.distributed`` process group with several processes runs.
        inverse_dtype: dtype of the eigendecompositions / inverses (``None``: the factors');
            the default ``float64`` keeps ``eigh`` stable on rank-deficient ``float32`` factors.

    Attributes:
        factors: ``{layer name: KroneckerFactors}`` after the first :meth:`update`.
        inverses: ``{layer name: KroneckerInverse}`` (eigendecompositions or damped
            inverses) after :meth:`invert`.
        layers: ``{layer name: KroneckerLayer}``, the layers KFAC preconditions.

    Layers with trainable parameters that KFAC does not know (normalisation layers, …)
    keep their plain gradients; the constructor lists them in one warning.
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
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or damping < 0:
            raise ValueError(f"damping must be a non-negative number, got {damping!r}")
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1):
            raise ValueError(f"ema must be None or a number in [0, 1), got {ema!r}")
        if pi_correction and inverse != "factor":
            raise ValueError("pi_correction=True applies to factor-wise damping: use inverse='factor'")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive int, got {mc_samples!r}")
        self.model = _unwrap(model)
        self.approx, self.fisher, self.damping, self.ema = approx, fisher, float(damping), ema
        self.pi_correction, self.inverse, self.mc_samples = pi_correction, inverse, mc_samples
        self.generator, self.distributed, self.inverse_dtype = generator, distributed, inverse_dtype
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

    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(Re)compute the factors of every layer on one batch.

        Runs one forward pass (hooks record each layer's input) and one backward pass per
        backpropagated vector (type-2: ``C`` for cross-entropy, the number of output entries
        per sample for MSE; MC: ``mc_samples``; empirical: one), which compute gradients
        w.r.t. layer outputs only; parameter ``.grad`` s are not touched.

        Args:
            inputs: the model's input batch.
            targets: the targets ``loss_fn`` takes (class indices ``[N]`` or ``[N, …]``).

        Returns:
            The loss on the batch (detached).
        """
        captures = {name: _Capture() for name in self.layers}
        # every layer output gets `+ anchor` (zero): asking autograd for the anchor's gradient
        # visits each tap without computing any weight gradient
        anchor = torch.zeros((), requires_grad=True)
        handles = [
            layer.module.register_forward_hook(self._tap(name, captures[name], anchor))
            for name, layer in self.layers.items()
        ]
        try:
            with torch.enable_grad():
                output = self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        with torch.no_grad():
            loss = self.loss_fn(output, targets)
        vectors = backprop_vectors(self.loss_fn, output, targets, self.fisher, self.mc_samples, self.generator)
        used = {name: c for name, c in captures.items() if c.inputs is not None}
        if used and output.requires_grad:
            for m, vector in enumerate(vectors):
                torch.autograd.grad(output, anchor, vector, retain_graph=m < len(vectors) - 1, allow_unused=True)
        self._store(self._factors_of(used, len(vectors)))
        return loss

    @staticmethod
    def _tap(name: str, capture: _Capture, anchor: torch.Tensor):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if capture.inputs is not None:
                raise RuntimeError(
                    f"layer {name!r} ran twice in one forward pass; KFAC supports one call per layer and pass"
                )
            capture.inputs, capture.output, capture.grads = args[0].detach(), output.detach(), []
            tapped = output + anchor
            tapped.register_hook(capture.grads.append)  # sees the gradient before any in-place op
            return tapped

        return hook

    def _factors_of(self, captures: dict[str, _Capture], vectors: int) -> dict[str, KroneckerFactors]:
        factors = {}
        for name, capture in captures.items():
            layer = self.layers[name]
            assert capture.inputs is not None and capture.output is not None and capture.grads is not None
            if capture.grads:
                grads = torch.stack(capture.grads)
            else:  # the output does not depend on this layer
                grads = capture.output.new_zeros((vectors, *capture.output.shape))
            A = layer.input_factor(capture.inputs, capture.output, self.approx)
            B = layer.output_factor(grads, self.approx)
            if isinstance(layer, LinearLayer):
                A, B = A[0], B[0]
            factors[name] = KroneckerFactors(A.contiguous(), B.contiguous())
        return factors

    def _store(self, new: dict[str, KroneckerFactors]) -> None:
        if self.distributed is not False:  # None: whenever a process group runs (checked there)
            names = sorted(new)
            averaged = all_reduce_mean([t for n in names for t in (new[n].A, new[n].B)])
            new = {n: KroneckerFactors(averaged[2 * i], averaged[2 * i + 1]) for i, n in enumerate(names)}
        for name, factors in new.items():
            old = self.factors.get(name)
            if self.ema is not None and old is not None:
                beta = self.ema
                factors = KroneckerFactors(beta * old.A + (1 - beta) * factors.A, beta * old.B + (1 - beta) * factors.B)
            self.factors[name] = factors
        self._stale = True

    def invert(self) -> None:
        """(Re)compute the damped inverse (or eigendecomposition) of every layer's factors."""
        for name, factors in self.factors.items():
            A, B = factors.A, factors.B
            if A.dim() == 2:
                A, B = A.unsqueeze(0), B.unsqueeze(0)
            self.inverses[name] = damped_inverse(
                A, B, self.damping, self.inverse, self.pi_correction, self.inverse_dtype
            )
        self._stale = False

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
        """
        if (refresh and self._stale) or any(name not in self.inverses for name in self.factors):
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

    def _apply(
        self, name: str, weight_grad: torch.Tensor, bias_grad: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer = self.layers[name]
        matrix = layer.to_matrix(weight_grad, bias_grad)
        new_weight, new_bias = layer.from_matrix(self.inverses[name].apply(matrix).to(weight_grad.dtype))
        return new_weight, new_bias
