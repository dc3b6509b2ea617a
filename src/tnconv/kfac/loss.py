"""The loss as KFAC sees it: a reduction factor and the vectors to backpropagate.

A supported loss is ``L = R · Σ_n ℓ_n(f_n)`` over the samples ``n`` of a batch, with
``f_n`` the model output of one sample and ``R`` the *reduction factor*:

- ``torch.nn.CrossEntropyLoss`` on logits ``[N, C]`` with class-index targets ``[N]``:
  ``ℓ_n = −log softmax(f_n)[y_n]``; ``R = 1/N`` (``reduction="mean"``) or ``1`` (``"sum"``).
- ``torch.nn.MSELoss`` on outputs ``[N, …]``: ``ℓ_n = Σ_j (f_nj − y_nj)²`` over all
  entries of one sample; ``R = 1/numel(output)`` (``"mean"``, torch divides by every
  entry, not by ``N``) or ``1`` (``"sum"``).

Every curvature KFAC uses is ``Σ_n Σ_m J_nᵀ v_nm v_nmᵀ J_n`` for per-sample vectors
``v_nm`` in output space (``J_n`` the Jacobian of ``f_n``); :func:`backprop_vectors` returns
them stacked as ``[M, *output.shape]``, scaled so that the sum approximates the curvature
of ``L`` itself (reduction included):

- ``"type-2"``: ``Σ_m v_nm v_nmᵀ = R·∇²ℓ_n`` exactly (the columns of a square root of the
  loss Hessian), so the sum is the generalised Gauss-Newton matrix (GGN) of ``L``. For
  cross-entropy ``∇²ℓ = diag(p) − ppᵀ = SSᵀ`` with ``S = diag(√p) − p√pᵀ`` (``C`` columns),
  for the squared error ``∇²ℓ = 2I`` (one column per output entry).
- ``"mc"``: ``v = √(R/M)·∇ℓ_n(f_n, ŷ)`` with ``ŷ`` drawn from the model's predictive
  distribution (categorical ``softmax(f_n)``; Gaussian ``N(f_n, I/2)``, whose negative
  log-likelihood is ``ℓ_n`` up to a constant), ``M`` samples: an unbiased estimate of the
  type-2 matrix (both equal the Fisher, the losses being exponential-family likelihoods).
- ``"empirical"``: ``v = √R·∇ℓ_n(f_n, y_n)`` with the true targets: the empirical Fisher
  ``R·Σ_n ∇ℓ_n ∇ℓ_nᵀ``.

Example:
    >>> import torch
    >>> logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    >>> backprop_vectors(torch.nn.CrossEntropyLoss(), logits, labels, "type-2").shape
    torch.Size([3, 4, 3])
"""

from __future__ import annotations

import math

import torch

FISHER_TYPES = ("type-2", "mc", "empirical")
REDUCTIONS = ("mean", "sum")


def check_loss_fn(loss_fn: object) -> torch.nn.Module:
    """Reject every loss but an unweighted ``CrossEntropyLoss`` / ``MSELoss`` with mean or sum."""
    if not isinstance(loss_fn, (torch.nn.CrossEntropyLoss, torch.nn.MSELoss)):
        raise TypeError(
            f"loss_fn must be a torch.nn.CrossEntropyLoss or torch.nn.MSELoss (it defines the predictive "
            f"distribution), got {type(loss_fn).__name__}"
        )
    if loss_fn.reduction not in REDUCTIONS:
        raise ValueError(f"loss_fn.reduction must be one of {REDUCTIONS}, got {loss_fn.reduction!r}")
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        if loss_fn.weight is not None:
            raise ValueError("loss_fn: CrossEntropyLoss with class weights is not supported (weight must be None)")
        if loss_fn.label_smoothing != 0.0:
            raise ValueError(
                f"loss_fn: CrossEntropyLoss with label_smoothing={loss_fn.label_smoothing} is not supported (use 0)"
            )
    return loss_fn


def reduction_factor(loss_fn: torch.nn.Module, output: torch.Tensor) -> float:
    """``R`` in ``L = R · Σ_n ℓ_n`` (see the module docstring).

    >>> reduction_factor(torch.nn.MSELoss(), torch.zeros(4, 3))
    0.08333333333333333
    """
    if loss_fn.reduction == "sum":
        return 1.0
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return 1.0 / output.shape[0]
    return 1.0 / output.numel()


def _check_output(loss_fn: torch.nn.Module, output: torch.Tensor, targets: torch.Tensor) -> None:
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        if output.dim() != 2:
            raise ValueError(
                f"KFAC with CrossEntropyLoss needs model outputs of shape [N, C], got {tuple(output.shape)}"
            )
        if targets.dtype.is_floating_point or tuple(targets.shape) != (output.shape[0],):
            raise ValueError(
                f"KFAC with CrossEntropyLoss needs class-index targets of shape [{output.shape[0]}], got "
                f"{tuple(targets.shape)} of dtype {targets.dtype}"
            )
        if bool((targets == loss_fn.ignore_index).any()):
            raise ValueError(f"targets contain ignore_index={loss_fn.ignore_index}, which KFAC does not support")
    elif tuple(targets.shape) != tuple(output.shape):
        raise ValueError(
            f"KFAC with MSELoss needs targets of the output's shape {tuple(output.shape)}, got {tuple(targets.shape)}"
        )


def backprop_vectors(
    loss_fn: torch.nn.Module,
    output: torch.Tensor,
    targets: torch.Tensor,
    fisher: str,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The vectors ``v`` whose backpropagation through the model gives the curvature.

    Args:
        loss_fn: a loss accepted by :func:`check_loss_fn`.
        output: the model output ``f`` (``[N, C]`` for cross-entropy, ``[N, …]`` for MSE).
        targets: the targets ``loss_fn`` takes; only ``"empirical"`` uses their values.
        fisher: ``"type-2"``, ``"mc"`` or ``"empirical"``.
        mc_samples: number ``M`` of samples for ``"mc"``.
        generator: random generator for ``"mc"``.

    Returns:
        ``[M, *output.shape]``, ``M`` = number of classes (cross-entropy) or output entries
        per sample (MSE) for ``"type-2"``, ``mc_samples`` for ``"mc"``, ``1`` for
        ``"empirical"``.
    """
    _check_output(loss_fn, output, targets)
    output = output.detach()
    scale = reduction_factor(loss_fn, output)
    is_ce = isinstance(loss_fn, torch.nn.CrossEntropyLoss)
    if fisher == "empirical":
        residual = _loss_gradient(loss_fn, output, targets)
        return (math.sqrt(scale) * residual).unsqueeze(0)
    if fisher == "type-2":
        if is_ce:
            probs = output.softmax(dim=1)
            classes = output.shape[1]
            eye = torch.eye(classes, dtype=output.dtype, device=output.device)
            # column c of S = diag(√p) − p√pᵀ is √p_c (e_c − p); stacked over c: [C, N, C]
            columns = probs.sqrt().T.unsqueeze(-1) * (eye.unsqueeze(1) - probs.unsqueeze(0))
            return math.sqrt(scale) * columns
        per_sample = output[0].numel()
        eye = torch.eye(per_sample, dtype=output.dtype, device=output.device).reshape(per_sample, 1, *output.shape[1:])
        return math.sqrt(2.0 * scale) * eye.expand(per_sample, *output.shape)
    if fisher == "mc":
        if is_ce:
            probs = output.softmax(dim=1)
            drawn = torch.multinomial(probs, mc_samples, replacement=True, generator=generator).T  # [M, N]
            onehot = torch.nn.functional.one_hot(drawn, output.shape[1]).to(output.dtype)
            return math.sqrt(scale / mc_samples) * (probs.unsqueeze(0) - onehot)
        # ŷ ~ N(f, I/2): ∇ℓ = 2(f − ŷ) = −√2·ε with ε standard normal
        noise = torch.randn((mc_samples, *output.shape), generator=generator, dtype=output.dtype, device=output.device)
        return math.sqrt(2.0 * scale / mc_samples) * noise
    raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")


def _loss_gradient(loss_fn: torch.nn.Module, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``∇ℓ_n`` stacked over ``n``: the gradient of the summed, unreduced loss."""
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        onehot = torch.nn.functional.one_hot(targets, output.shape[1]).to(output.dtype)
        return output.softmax(dim=1) - onehot
    return 2.0 * (output - targets)
