"""Preconditioning against dense Kronecker products, and the optimizer's schedule (float64)."""

from __future__ import annotations

import copy

import pytest
import torch

from tnconv.kfac import KFAC, KFACOptimizer

from .test_kfac_exact import layer_index_matrix
from .test_kfac_model import mixed_net

DTYPE = torch.float64


def batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g)


def dense_inverse(A, B, damping, mode, pi_correction):
    """The damped inverse of one group's block, as a dense matrix (torch order of ``[C_out/G, d]``)."""
    if mode == "eigen":  # (B ⊗ A + λI)⁻¹
        block = torch.kron(B, A)
        return torch.linalg.inv(block + damping * torch.eye(block.shape[0], dtype=DTYPE))
    pi = 1.0
    if pi_correction:
        pi = ((torch.trace(A) / A.shape[0]) / (torch.trace(B) / B.shape[0])).sqrt()
    root = damping**0.5
    A_inv = torch.linalg.inv(A + pi * root * torch.eye(A.shape[0], dtype=DTYPE))
    B_inv = torch.linalg.inv(B + root / pi * torch.eye(B.shape[0], dtype=DTYPE))
    return torch.kron(B_inv, A_inv)


@pytest.mark.parametrize("mode, pi_correction", [("eigen", False), ("factor", False), ("factor", True)])
def test_precondition_equals_dense_damped_inverse(mode, pi_correction):
    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    x, t = batch()
    damping = 0.05
    kfac = KFAC(model, loss_fn, approx="reduce", damping=damping, inverse=mode, pi_correction=pi_correction)
    kfac.update(x, t)
    loss_fn(model(x), t).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    out = kfac.precondition(grads)
    assert out.keys() == grads.keys()
    for name, module in model.named_children():
        A, B = kfac.factors[name].A, kfac.factors[name].B
        if A.dim() == 2:
            A, B = A[None], B[None]
        flat = torch.cat(
            [grads[f"{name}.weight"].reshape(-1)] + ([grads[f"{name}.bias"]] if module.bias is not None else [])
        )
        expected = torch.empty_like(flat)
        for g, rows in enumerate(layer_index_matrix(module)):
            rows = rows.reshape(-1)
            expected[rows] = dense_inverse(A[g], B[g], damping, mode, pi_correction) @ flat[rows]
        mine = torch.cat(
            [out[f"{name}.weight"].reshape(-1)] + ([out[f"{name}.bias"]] if module.bias is not None else [])
        )
        torch.testing.assert_close(mine, expected, rtol=1e-9, atol=1e-12)
    kfac.precondition()  # in place on .grad: the same numbers
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, out[n])


def test_precondition_dict_passes_unknown_entries_through():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)).to(DTYPE)
    with pytest.warns(UserWarning, match="LayerNorm"):
        kfac = KFAC(model, torch.nn.MSELoss(), damping=0.1)
    kfac.update(torch.randn(5, 3, dtype=DTYPE), torch.randn(5, 2, dtype=DTYPE))
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    out = kfac.precondition(grads)
    assert out["1.weight"] is grads["1.weight"] and out["1.bias"] is grads["1.bias"]
    assert not torch.equal(out["0.weight"], grads["0.weight"])


def test_refresh_controls_reinversion():
    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    kfac = KFAC(model, loss_fn, damping=0.1)
    kfac.update(*batch(0))
    torch.manual_seed(0)
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    first = kfac.precondition(grads)
    kfac.update(*batch(1))
    stale = kfac.precondition(grads, refresh=False)
    fresh = kfac.precondition(grads)
    torch.testing.assert_close(stale["linear.weight"], first["linear.weight"])
    assert not torch.allclose(fresh["linear.weight"], first["linear.weight"])


def test_sgd_step_follows_the_preconditioned_gradient():
    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    reference = copy.deepcopy(model)
    x, t = batch()
    opt = KFACOptimizer(model, loss_fn, lr=0.5, damping=0.1)
    loss_fn(model(x), t).backward()
    opt.step(x, t)
    kfac = KFAC(reference, loss_fn, damping=0.1)
    kfac.update(x, t)
    loss_fn(reference(x), t).backward()
    direction = kfac.precondition({n: p.grad for n, p in reference.named_parameters()})
    for (n, p), p0 in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.5 * direction[n])


def test_schedule_of_statistics_and_inverses(monkeypatch):
    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    opt = KFACOptimizer(model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-3), T_stats=2, T_inv=3)
    calls = []
    for method in ("update", "invert"):
        original = getattr(opt.kfac, method)
        monkeypatch.setattr(opt.kfac, method, lambda *a, m=method, f=original: (calls.append((m, opt.steps)), f(*a)))
    x, t = batch()
    for _ in range(7):
        opt.zero_grad()
        loss_fn(model(x), t).backward()
        opt.step(x, t)
    assert [s for m, s in calls if m == "update"] == [0, 2, 4, 6]
    assert [s for m, s in calls if m == "invert"] == [0, 3, 6]
    opt.zero_grad()
    loss_fn(model(x), t).backward()
    opt.step()  # step 7 updates nothing: no batch needed
    with pytest.raises(ValueError, match="inputs"):
        opt.step()  # step 8 updates the factors


def test_optimizer_state_round_trip_and_arguments():
    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    opt = KFACOptimizer(model, loss_fn, lr=0.1, momentum=0.9)
    x, t = batch()
    loss_fn(model(x), t).backward()
    opt.step(x, t)
    other = KFACOptimizer(model, loss_fn, lr=0.1, momentum=0.9)
    other.load_state_dict(opt.state_dict())
    assert other.steps == 1
    torch.testing.assert_close(other.kfac.factors["conv2d"].A, opt.kfac.factors["conv2d"].A)
    with pytest.raises(ValueError, match="lr"):
        KFACOptimizer(model, loss_fn)
    with pytest.raises(ValueError, match="T_inv"):
        KFACOptimizer(model, loss_fn, lr=0.1, T_inv=0)
    with pytest.raises(TypeError, match="optimizer"):
        KFACOptimizer(model, loss_fn, "sgd")
