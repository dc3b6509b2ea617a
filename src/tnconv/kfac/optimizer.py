"""A KFAC optimizer: any ``torch.optim`` optimizer stepping along KFAC-preconditioned gradients.

Example:
    >>> import torch, tnconv
    >>> model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    >>> loss_fn = torch.nn.CrossEntropyLoss()
    >>> opt = tnconv.kfac.KFACOptimizer(model, loss_fn, lr=0.1, damping=1e-2, T_stats=1, T_inv=5)
    >>> x, y = torch.randn(16, 2, 4), torch.randint(0, 3, (16,))
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     loss_fn(model(x), y).backward()
    ...     opt.step(x, y)
"""

from __future__ import annotations

from typing import Any

import torch

from .core import KFAC, KroneckerFactors
from .ekfac import EKFAC, EigenBasis


class KFACOptimizer:
    """Precondition gradients with :class:`~tnconv.kfac.KFAC`, then take a step of a base optimizer.

    Args:
        model: the network (may be wrapped in ``DistributedDataParallel``).
        loss_fn: ``torch.nn.CrossEntropyLoss`` or ``torch.nn.MSELoss``.
        optimizer: the base ``torch.optim.Optimizer`` over the model's parameters; when
            ``None``, ``torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)``.
        lr, momentum: for the default SGD only.
        T_stats: update the factors every ``T_stats`` steps (the first step always does).
        T_inv: recompute the inverses every ``T_inv`` steps (the first step always does).
        kl_clip: ``None`` or ``κ > 0``: scale the preconditioned gradients ``p`` of KFAC's
            layers by ``min(1, √(κ / (lr² Σ pᵀg)))`` (``g`` the plain gradients, ``lr`` of the
            first parameter group), which bounds the step's predicted change of the model's
            output distribution (Ba et al., 2017).
        ekfac: precondition with :class:`~tnconv.kfac.EKFAC` instead of KFAC.
        **kfac_options: passed to :class:`~tnconv.kfac.KFAC` (``approx``, ``fisher``,
            ``damping``, ``ema``, ``pi_correction``, ``inverse``, ``mc_samples``, …).

    Use: compute the gradients as usual (``loss.backward()``), then ``step(inputs, targets)``.
    A step that updates the factors runs KFAC's own forward and backward passes on
    ``(inputs, targets)``; it leaves the ``.grad`` s alone until it preconditions them. A
    learning-rate scheduler attaches to ``opt.optimizer``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        lr: float | None = None,
        momentum: float = 0.0,
        T_stats: int = 1,
        T_inv: int = 1,
        kl_clip: float | None = None,
        ekfac: bool = False,
        **kfac_options: Any,
    ) -> None:
        for name, value in (("T_stats", T_stats), ("T_inv", T_inv)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if optimizer is None:
            if lr is None:
                raise ValueError("give either a base optimizer or lr (for plain SGD)")
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        elif lr is not None:
            raise ValueError("lr belongs to the base optimizer: give either optimizer or lr, not both")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.kfac = (EKFAC if ekfac else KFAC)(model, loss_fn, **kfac_options)
        self.optimizer = optimizer
        if kl_clip is not None and (isinstance(kl_clip, bool) or not isinstance(kl_clip, (int, float)) or kl_clip <= 0):
            raise ValueError(f"kl_clip must be None or a positive number, got {kl_clip!r}")
        self.T_stats, self.T_inv, self.kl_clip = T_stats, T_inv, kl_clip
        self.steps = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> None:
        """Update factors/inverses when due, precondition ``.grad`` in place, step the base optimizer.

        Args:
            inputs, targets: the batch for the factors; required on steps that update them
                (every ``T_stats``-th, counting from the first).
        """
        if self.steps % self.T_stats == 0:
            if inputs is None or targets is None:
                raise ValueError(
                    f"step {self.steps} updates the factors (T_stats={self.T_stats}): pass inputs and targets"
                )
            self.kfac.update(inputs, targets)
        if self.steps % self.T_inv == 0:
            self.kfac.invert()
        if self.kl_clip is None:
            self.kfac.precondition(refresh=False)
        else:
            self._precondition_clipped()
        self.optimizer.step()
        self.steps += 1

    def _precondition_clipped(self) -> None:
        params = [
            p
            for layer in self.kfac.layers.values()
            for p in (layer.module.weight, layer.module.bias)
            if p is not None and p.grad is not None
        ]
        plain = [p.grad.clone() for p in params]
        self.kfac.precondition(refresh=False)
        lr = self.optimizer.param_groups[0]["lr"]
        predicted = lr**2 * sum((p.grad * g).sum() for p, g in zip(params, plain))
        if predicted > 0:
            scale = min(1.0, (self.kl_clip / predicted).sqrt().item())
            for p in params:
                p.grad.mul_(scale)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state, the step count and the factors (``(A, B, root)`` per
        layer: ``A`` is ``None`` where the factor is held as its root)."""
        factors = {name: (None if f.root is not None else f.A, f.B, f.root) for name, f in self.kfac.factors.items()}
        state = {"optimizer": self.optimizer.state_dict(), "steps": self.steps, "factors": factors}
        if isinstance(self.kfac, EKFAC):
            state["corrections"] = dict(self.kfac.corrections)
            state["eigenbases"] = {n: (b.A_eigvecs, b.B_eigvecs) for n, b in self.kfac.eigenbases.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
        self.kfac.factors = {  # (A, B) from states saved before roots existed
            name: KroneckerFactors(saved[0], saved[1], root=saved[2] if len(saved) > 2 else None)
            for name, saved in state["factors"].items()
        }
        if isinstance(self.kfac, EKFAC):
            self.kfac.corrections = dict(state["corrections"])
            self.kfac.eigenbases = {n: EigenBasis(qa, qb) for n, (qa, qb) in state["eigenbases"].items()}
        if self.kfac._curvature_names():
            self.kfac.invert()
