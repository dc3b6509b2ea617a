"""The loss as KFAC sees it: a reduction factor and the vectors to backpropagate.

A supported loss is ``L = R · Σ_t ℓ_t(f)`` over its *terms* ``t`` with ``R`` the
*reduction factor*:

- ``torch.nn.CrossEntropyLoss`` on logits ``[N, C]`` or ``[N, C, d_1, …]`` (one term per
  sample and position), with class-index targets ``[N, d_1, …]`` or class-probability
  targets ``[N, C, d_1, …]``: ``ℓ = −Σ_c t_c log softmax(f)_c``; ``R = 1/(N·∏d)``
  (``reduction="mean"``) or ``1`` (``"sum"``).
- ``torch.nn.MSELoss`` on outputs ``[N, …]``: ``ℓ = (f_j − y_j)²`` per entry;
  ``R = 1/numel(output)`` (``"mean"``, torch divides by every entry, not by ``N``) or ``1``.
- ``torch.nn.BCEWithLogitsLoss`` on logits ``[N, …]`` with targets ``y ∈ [0, 1]`` of the
  same shape: ``ℓ = softplus(f_j) − y_j f_j`` per entry (a Bernoulli likelihood with
  ``p = σ(f)``); ``R`` as for MSE. ``weight`` and ``pos_weight`` must be ``None``.

Every curvature KFAC uses is ``Σ_n Σ_m J_nᵀ v_nm v_nmᵀ J_n`` for per-sample vectors
``v_nm`` in output space (``J_n`` the Jacobian of sample ``n``'s output);
:func:`backprop_vectors` returns them stacked as ``[M, *output.shape]``, scaled so that the
sum approximates the curvature of ``L`` itself (reduction included):

- ``"type-2"``: ``Σ_m v_nm v_nmᵀ = R·Σ_t ∇²ℓ_t`` exactly (the columns of a square root of
  the loss Hessian), so the sum is the generalised Gauss-Newton matrix (GGN) of ``L``. For
  cross-entropy ``∇²ℓ = w(diag(p) − ppᵀ) = w SSᵀ`` with ``S = diag(√p) − p√pᵀ`` and
  ``w = Σ_c t_c`` (``1`` for class indices): ``C`` columns per position (``C·∏d``
  vectors); for the squared error ``2I``, for BCE ``diag(σ(f)(1 − σ(f)))``: one column per
  output entry of a sample.
- ``"mc"``: ``v = √(R/M)·∇ℓ(f, ŷ)`` with ``ŷ`` drawn from the model's predictive
  distribution (categorical ``softmax(f)`` per position, scaled by ``√w``; Gaussian
  ``N(f, I/2)``, whose negative log-likelihood is the squared error up to a constant;
  Bernoulli ``σ(f)``), ``M`` samples: an unbiased estimate of the type-2 matrix (both equal
  the Fisher, the losses being exponential-family likelihoods).
- ``"empirical"``: ``v = √R·∇ℓ(f, y)`` with the true targets: the empirical Fisher.

Example:
    >>> import torch
    >>> logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    >>> backprop_vectors(torch.nn.CrossEntropyLoss(), logits, labels, "type-2").shape
    torch.Size([3, 4, 3])
    >>> backprop_vectors(torch.nn.BCEWithLogitsLoss(), logits, torch.ones(4, 3), "mc").shape
    torch.Size([1, 4, 3])
"""

from __future__ import annotations

import math

import torch

FISHER_TYPES = ("type-2", "mc", "empirical")
REDUCTIONS = ("mean", "sum")
LOSSES = (torch.nn.CrossEntropyLoss, torch.nn.MSELoss, torch.nn.BCEWithLogitsLoss)


def check_loss_fn(loss_fn: object) -> torch.nn.Module:
    """Reject every loss but an unweighted ``CrossEntropyLoss`` / ``MSELoss`` /
    ``BCEWithLogitsLoss`` with mean or sum reduction."""
    if not isinstance(loss_fn, LOSSES):
        raise TypeError(
            f"loss_fn must be a torch.nn.CrossEntropyLoss, MSELoss or BCEWithLogitsLoss (it defines the "
            f"predictive distribution), got {type(loss_fn).__name__}"
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
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss):
        if loss_fn.weight is not None or loss_fn.pos_weight is not None:
            raise ValueError("loss_fn: BCEWithLogitsLoss with weight or pos_weight is not supported (use None)")
    return loss_fn


def reduction_factor(loss_fn: torch.nn.Module, output: torch.Tensor) -> float:
    """``R`` in ``L = R · Σ_t ℓ_t`` (see the module docstring).

    >>> reduction_factor(torch.nn.MSELoss(), torch.zeros(4, 3))
    0.08333333333333333
    >>> reduction_factor(torch.nn.CrossEntropyLoss(), torch.zeros(4, 3, 5))
    0.05
    """
    if loss_fn.reduction == "sum":
        return 1.0
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return 1.0 / (output.numel() // output.shape[1])
    return 1.0 / output.numel()


def _probability_targets(output: torch.Tensor, targets: torch.Tensor) -> bool:
    return targets.dtype.is_floating_point and tuple(targets.shape) == tuple(output.shape)


def check_targets(loss_fn: torch.nn.Module, output: torch.Tensor, targets: torch.Tensor) -> None:
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        if output.dim() < 2:
            raise ValueError(
                f"KFAC with CrossEntropyLoss needs model outputs of shape [N, C, ...], got {tuple(output.shape)}"
            )
        if _probability_targets(output, targets):
            if bool((targets < 0).any()):
                raise ValueError("KFAC with CrossEntropyLoss: probability targets must be non-negative")
            return
        expected = (output.shape[0], *output.shape[2:])
        if targets.dtype.is_floating_point or tuple(targets.shape) != expected:
            raise ValueError(
                f"KFAC with CrossEntropyLoss needs class-index targets of shape {list(expected)} or class "
                f"probabilities of shape {list(output.shape)}, got targets {tuple(targets.shape)} of dtype "
                f"{targets.dtype}"
            )
        if bool((targets == loss_fn.ignore_index).any()):
            raise ValueError(f"targets contain ignore_index={loss_fn.ignore_index}, which KFAC does not support")
    elif tuple(targets.shape) != tuple(output.shape):
        raise ValueError(
            f"KFAC with {type(loss_fn).__name__} needs targets of the output's shape {tuple(output.shape)}, got "
            f"{tuple(targets.shape)}"
        )


def _term_weights(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """``w = Σ_c t_c`` per sample and position ``[N, 1, d…]`` for probability targets, else ``None``."""
    if _probability_targets(output, targets):
        return targets.detach().to(output.dtype).sum(1, keepdim=True)
    return None


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
        output: the model output ``f`` (``[N, C, …]`` for cross-entropy, ``[N, …]`` otherwise).
        targets: the targets ``loss_fn`` takes; ``"empirical"`` uses their values (and
            type-2/MC the total mass ``Σ_c t_c`` of cross-entropy probability targets).
        fisher: ``"type-2"``, ``"mc"`` or ``"empirical"``.
        mc_samples: number ``M`` of samples for ``"mc"``.
        generator: random generator for ``"mc"``.

    Returns:
        ``[M, *output.shape]``: for ``"type-2"`` ``M = C·∏d`` (cross-entropy, ``d`` the extra
        dimensions) or the number of output entries per sample (MSE, BCE); ``mc_samples``
        for ``"mc"``; ``1`` for ``"empirical"``.
    """
    check_targets(loss_fn, output, targets)
    output = output.detach()
    scale = reduction_factor(loss_fn, output)
    if fisher == "empirical":
        residual = _loss_gradient(loss_fn, output, targets)
        return (math.sqrt(scale) * residual).unsqueeze(0)
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return _cross_entropy_vectors(output, targets, fisher, scale, mc_samples, generator)
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss):
        probs = torch.sigmoid(output)
        if fisher == "type-2":
            return _per_entry(output, (scale * probs * (1 - probs)).sqrt())
        if fisher == "mc":
            drawn = torch.bernoulli(probs.expand(mc_samples, *output.shape), generator=generator)
            return math.sqrt(scale / mc_samples) * (probs.unsqueeze(0) - drawn)
    else:
        if fisher == "type-2":
            return _per_entry(output, torch.full_like(output, math.sqrt(2.0 * scale)))
        if fisher == "mc":
            # ŷ ~ N(f, I/2): ∇ℓ = 2(f − ŷ) = −√2·ε with ε standard normal
            noise = torch.randn(
                (mc_samples, *output.shape), generator=generator, dtype=output.dtype, device=output.device
            )
            return math.sqrt(2.0 * scale / mc_samples) * noise
    raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")


def _per_entry(output: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``[E, *output.shape]``: vector ``j`` is ``root`` at entry ``j`` of every sample, else 0."""
    per_sample = output[0].numel()
    eye = torch.eye(per_sample, dtype=output.dtype, device=output.device).reshape(per_sample, 1, *output.shape[1:])
    return eye * root.unsqueeze(0)


def _cross_entropy_vectors(
    output: torch.Tensor,
    targets: torch.Tensor,
    fisher: str,
    scale: float,
    mc_samples: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    n, classes = output.shape[:2]
    probs = output.softmax(dim=1)
    weights = _term_weights(output, targets)
    root = math.sqrt(scale) if weights is None else math.sqrt(scale) * weights.sqrt()
    if fisher == "type-2":
        flat = probs.reshape(n, classes, -1)  # [N, C, P]
        positions = flat.shape[2]
        eye = torch.eye(classes, dtype=output.dtype, device=output.device)
        # column c of S = diag(√p) − p√pᵀ at position q is √p_c (e_c − p), nonzero only at q: [C, P, N, C, P]
        columns = flat.sqrt().permute(1, 2, 0)[:, :, :, None] * (eye[:, None, None, :] - flat.permute(2, 0, 1)[None])
        at = torch.eye(positions, dtype=output.dtype, device=output.device)
        vectors = columns[..., None] * at[None, :, None, None, :]
        vectors = vectors.reshape(classes * positions, *output.shape)
        return vectors * root if isinstance(root, torch.Tensor) else root * vectors
    if fisher == "mc":
        flat = probs.movedim(1, -1).reshape(-1, classes)  # [N·P, C]
        drawn = torch.multinomial(flat, mc_samples, replacement=True, generator=generator).T  # [M, N·P]
        onehot = torch.nn.functional.one_hot(drawn, classes).to(output.dtype)  # [M, N·P, C]
        onehot = onehot.reshape(mc_samples, n, *output.shape[2:], classes).movedim(-1, 2)
        vectors = (probs.unsqueeze(0) - onehot) / math.sqrt(mc_samples)
        return vectors * root if isinstance(root, torch.Tensor) else root * vectors
    raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")


def _loss_gradient(loss_fn: torch.nn.Module, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Σ_t ∇ℓ_t`` per sample: the gradient of the summed, unreduced loss."""
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        probs = output.softmax(dim=1)
        if _probability_targets(output, targets):
            t = targets.to(output.dtype)
            return probs * t.sum(1, keepdim=True) - t
        onehot = torch.nn.functional.one_hot(targets, output.shape[1]).movedim(-1, 1).to(output.dtype)
        return probs - onehot
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss):
        return torch.sigmoid(output) - targets.to(output.dtype)
    return 2.0 * (output - targets)
