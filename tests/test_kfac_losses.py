"""BCEWithLogitsLoss, CrossEntropyLoss with probability targets and with extra dimensions
``[N, C, …]``, and Linear layers on inputs with extra dimensions: the backpropagated vectors
against ``torch.func`` Hessians/gradients of the loss, and type-2 factors against
``J H J`` from autograd Jacobians (float64)."""

from __future__ import annotations

import pytest
import torch

from tnconv.kfac import KFAC
from tnconv.kfac.loss import backprop_vectors

from .test_kfac_model import reference_output_factor

DTYPE = torch.float64


def _case(name: str, g: torch.Generator):
    """(loss, logits, targets) with 3 samples."""
    if name.startswith("bce"):
        f = torch.randn(3, 2, 2, generator=g, dtype=DTYPE)
        reduction = name.split("-")[1]
        return torch.nn.BCEWithLogitsLoss(reduction=reduction), f, torch.rand(3, 2, 2, generator=g, dtype=DTYPE)
    if name == "ce-probs":
        f = torch.randn(3, 4, generator=g, dtype=DTYPE)
        return torch.nn.CrossEntropyLoss(), f, torch.rand(3, 4, generator=g, dtype=DTYPE).softmax(1)
    if name == "ce-probs-unnormalised-sum":
        f = torch.randn(3, 4, generator=g, dtype=DTYPE)
        return torch.nn.CrossEntropyLoss(reduction="sum"), f, 2 * torch.rand(3, 4, generator=g, dtype=DTYPE)
    if name == "ce-extra":
        f = torch.randn(3, 4, 2, 3, generator=g, dtype=DTYPE)
        return torch.nn.CrossEntropyLoss(), f, torch.randint(0, 4, (3, 2, 3), generator=g)
    assert name == "ce-extra-probs"
    f = torch.randn(3, 4, 5, generator=g, dtype=DTYPE)
    return torch.nn.CrossEntropyLoss(reduction="sum"), f, torch.rand(3, 4, 5, generator=g, dtype=DTYPE).softmax(1)


CASES = ["bce-mean", "bce-sum", "ce-probs", "ce-probs-unnormalised-sum", "ce-extra", "ce-extra-probs"]


def per_sample_gram(vectors: torch.Tensor) -> torch.Tensor:
    """``[N, E, E]``: ``Σ_m v[m, n] v[m, n]ᵀ``."""
    flat = vectors.flatten(2)
    return torch.einsum("mna,mnb->nab", flat, flat)


@pytest.mark.parametrize("name", CASES)
def test_type2_vectors_are_a_square_root_of_the_loss_hessian(name):
    loss_fn, f, t = _case(name, torch.Generator().manual_seed(0))
    H = torch.func.hessian(lambda out: loss_fn(out, t))(f)
    n, e = f.shape[0], f[0].numel()
    H = H.reshape(n, e, n, e)
    for i in range(n):  # terms of different samples never mix
        for j in range(n):
            if i != j:
                assert H[i, :, j].abs().max() == 0
    blocks = torch.stack([H[i, :, i] for i in range(n)])
    torch.testing.assert_close(per_sample_gram(backprop_vectors(loss_fn, f, t, "type-2")), blocks)


@pytest.mark.parametrize("name", CASES)
def test_empirical_vectors_are_scaled_loss_gradients(name):
    loss_fn, f, t = _case(name, torch.Generator().manual_seed(1))
    grad = torch.func.grad(lambda out: loss_fn(out, t))(f)
    (v,) = backprop_vectors(loss_fn, f, t, "empirical")
    scale = 1.0 if loss_fn.reduction == "sum" else (f.numel() if name.startswith("bce") else f.numel() // f.shape[1])
    torch.testing.assert_close(v, grad * scale**0.5)


@pytest.mark.parametrize("name", ["bce-mean", "ce-probs", "ce-extra"])
def test_monte_carlo_vectors_estimate_the_hessian(name):
    loss_fn, f, t = _case(name, torch.Generator().manual_seed(2))
    exact = per_sample_gram(backprop_vectors(loss_fn, f, t, "type-2"))
    g = torch.Generator().manual_seed(3)
    estimate = per_sample_gram(backprop_vectors(loss_fn, f, t, "mc", mc_samples=20000, generator=g))
    assert ((estimate - exact).norm() / exact.norm()).item() < 0.05


class Tokens(torch.nn.Module):
    """Linear layers on ``[N, T, D]`` (weights shared over T), logits moved to ``[N, C, T]``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = torch.nn.Linear(3, 5), torch.nn.Linear(5, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(x))).transpose(1, 2)


class Segmenter(torch.nn.Module):
    """Conv2d → 1×1 Conv2d: per-pixel logits ``[N, C, H, W]``."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv, self.pixel = torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixel(torch.tanh(self.conv(x)))


def _model_case(kind: str, g: torch.Generator):
    torch.manual_seed(0)
    if kind == "tokens-ce":
        model, x = Tokens().to(DTYPE), torch.randn(3, 6, 3, generator=g, dtype=DTYPE)
        return model, x, torch.nn.CrossEntropyLoss(), torch.randint(0, 4, (3, 6), generator=g)
    if kind == "tokens-ce-probs":
        model, x = Tokens().to(DTYPE), torch.randn(3, 6, 3, generator=g, dtype=DTYPE)
        t = torch.rand(3, 4, 6, generator=g, dtype=DTYPE).softmax(1)
        return model, x, torch.nn.CrossEntropyLoss(reduction="sum"), t
    if kind == "pixels-ce":
        model, x = Segmenter().to(DTYPE), torch.randn(2, 2, 3, 3, generator=g, dtype=DTYPE)
        return model, x, torch.nn.CrossEntropyLoss(), torch.randint(0, 4, (2, 3, 3), generator=g)
    assert kind == "pixels-bce"
    model, x = Segmenter(2).to(DTYPE), torch.randn(2, 2, 3, 3, generator=g, dtype=DTYPE)
    return model, x, torch.nn.BCEWithLogitsLoss(), torch.rand(2, 2, 3, 3, generator=g, dtype=DTYPE).round()


@pytest.mark.parametrize("kind", ["tokens-ce", "tokens-ce-probs", "pixels-ce", "pixels-bce"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_type2_output_factors_equal_jacobian_references(kind, approx):
    model, x, loss_fn, t = _model_case(kind, torch.Generator().manual_seed(4))
    kfac = KFAC(model, loss_fn, approx=approx)
    kfac.update(x, t)
    for name, module in model.named_children():
        B = reference_output_factor(model, module, x, t, loss_fn, approx, "type-2")
        if isinstance(module, torch.nn.Linear):
            B = B[0]
        torch.testing.assert_close(kfac.factors[name].B, B, rtol=1e-10, atol=1e-12)


def test_bad_losses_and_targets():
    with pytest.raises(ValueError, match="pos_weight"):
        KFAC(torch.nn.Linear(2, 2), torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(2)))
    kfac = KFAC(torch.nn.Linear(2, 3), torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="non-negative"):
        kfac.update(torch.randn(4, 2), -torch.rand(4, 3))
    bce = KFAC(torch.nn.Linear(2, 3), torch.nn.BCEWithLogitsLoss())
    with pytest.raises(ValueError, match="targets"):
        bce.update(torch.randn(4, 2), torch.rand(4, 2))
