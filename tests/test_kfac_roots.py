"""KFAC keeps a short input factor as its root ``R`` (``A = Rᵀ R``): the same factors,
inverses, preconditioned gradients and operator algebra as dense factors (float64), the
root stacked under an EMA until it is no longer short, and non-finite roots caught."""

from __future__ import annotations

import math

import pytest
import torch

import tnconv.kfac.core as core_module
from tnconv.kfac import EKFAC, KFAC, KroneckerFactors, NonFiniteError

from .test_kfac_model import DTYPE, mixed_net


def _batch(step: int = 0):
    g = torch.Generator().manual_seed(3 + step)
    return torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (3,), generator=g)


def _run(monkeypatch, dense: bool, updates: int = 1, cls=KFAC, **options):
    """A KFAC object after ``updates`` updates, roots off (``dense``) or on, and the
    preconditioned gradients of one batch."""
    with monkeypatch.context() as patch:
        if dense:
            patch.setattr(core_module, "keeps_root", lambda rows, d: False)
        model = mixed_net()
        kfac = cls(model, torch.nn.CrossEntropyLoss(), generator=torch.Generator().manual_seed(1), **options)
        for step in range(updates):
            kfac.update(*_batch(step))
        x, y = _batch()
        model.zero_grad()
        torch.nn.CrossEntropyLoss()(model(x), y).backward()
        grads = kfac.precondition({n: p.grad.clone() for n, p in model.named_parameters()})
    return kfac, grads


@pytest.mark.parametrize("inverse", ["eigen", "factor"])
@pytest.mark.parametrize(("approx", "ema", "updates"), [("reduce", None, 1), ("reduce", 0.6, 3), ("expand", 0.6, 2)])
def test_roots_give_what_dense_factors_give(monkeypatch, approx, ema, updates, inverse):
    options = dict(approx=approx, ema=ema, inverse=inverse, fisher="mc", damping=0.1)
    dense, dense_grads = _run(monkeypatch, True, updates, **options)
    rooted, rooted_grads = _run(monkeypatch, False, updates, **options)
    assert all(f.root is None for f in dense.factors.values())
    assert any(f.root is not None for f in rooted.factors.values())  # the roots were used
    for name, value in dense_grads.items():
        torch.testing.assert_close(rooted_grads[name], value, rtol=1e-8, atol=1e-10)
    # the operator algebra on the roots (before anything forms A)
    v = torch.randn(sum(p.numel() for p in dense.parameters()), dtype=DTYPE)
    torch.testing.assert_close(rooted @ v, dense @ v)
    torch.testing.assert_close(rooted.inverse_operator() @ v, dense.inverse_operator() @ v)
    torch.testing.assert_close(rooted.trace(), dense.trace())
    torch.testing.assert_close(rooted.frobenius_norm(), dense.frobenius_norm())
    torch.testing.assert_close(rooted.logdet(), dense.logdet())
    if inverse == "eigen":  # (factor-wise damping inverts A + cI, which forms A)
        assert any(not f.formed for f in rooted.factors.values())
    for name, f in dense.factors.items():
        torch.testing.assert_close(rooted.factors[name].A, f.A)
        torch.testing.assert_close(rooted.factors[name].B, f.B)


def test_the_operator_of_a_full_rank_root_has_its_log_determinant(monkeypatch):
    # a root with as many rows as columns (kept here by switching the rule to "always"): the
    # log-determinant is finite and equals the dense one
    monkeypatch.setattr(core_module, "keeps_root", lambda rows, d: True)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).to(DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss(), approx="reduce", fisher="type-2")
    kfac.update(torch.randn(8, 3, dtype=DTYPE), torch.randn(8, 2, dtype=DTYPE))
    f = kfac.factors["0"]
    assert f.root is not None and f.root.shape == (8, 4) and not f.formed
    logdet = kfac.logdet()
    A, B = f.root.T @ f.root, f.B
    torch.testing.assert_close(logdet, 2 * torch.logdet(A) + 4 * torch.logdet(B))


def test_a_short_factor_stays_a_root_through_preconditioning(monkeypatch):
    kfac, _ = _run(monkeypatch, False, approx="reduce", fisher="mc", damping=0.1)
    linear = kfac.factors["linear"]  # d = 67 with the bias, 3 samples
    assert linear.root is not None and linear.root.shape == (3, 67) and not linear.formed
    assert linear.A_shape == (67, 67)
    assert not linear.formed  # precondition() decomposed it from the root
    torch.testing.assert_close(linear.A, linear.root.T @ linear.root)
    assert linear.formed


def test_an_ema_stacks_roots_until_they_are_no_longer_short(monkeypatch):
    kfac = KFAC(mixed_net(), torch.nn.CrossEntropyLoss(), approx="reduce", ema=0.5)
    rows = []
    for step in range(3):
        kfac.update(*_batch(step))
        rows.append({n: None if f.root is None else f.root.shape[-2] for n, f in kfac.factors.items()})
    # conv2d: d = 10, so 3 rows stay a root and 6 do not; the Linear (d = 67) keeps 9 rows
    assert [r["conv2d"] for r in rows] == [3, None, None]
    assert [r["linear"] for r in rows] == [3, 6, 9]


def test_the_root_factors_equal_an_explicit_ema(monkeypatch):
    kfac = KFAC(mixed_net(), torch.nn.CrossEntropyLoss(), approx="reduce", fisher="empirical", ema=0.3)
    single = KFAC(mixed_net(), torch.nn.CrossEntropyLoss(), approx="reduce", fisher="empirical")
    expected = None
    for step in range(2):
        kfac.update(*_batch(step))
        single.update(*_batch(step))
        new = single.factors["linear"].A.clone()
        expected = new if expected is None else 0.3 * expected + 0.7 * new
    torch.testing.assert_close(kfac.factors["linear"].A, expected)


def test_ekfac_uses_the_same_roots(monkeypatch):
    options = dict(approx="reduce", fisher="mc", damping=0.1)
    dense, dense_grads = _run(monkeypatch, True, cls=EKFAC, **options)
    rooted, rooted_grads = _run(monkeypatch, False, cls=EKFAC, **options)
    assert rooted.factors["linear"].root is not None
    # reduce: EKFAC depends on the basis of A's null space (tests/test_kfac_eigenbasis.py), so
    # compare what does not: the corrections' total and the range part of the factor
    for name in dense.corrections:
        torch.testing.assert_close(rooted.corrections[name].sum(), dense.corrections[name].sum())
        torch.testing.assert_close(rooted.factors[name].A, dense.factors[name].A)


def test_a_non_finite_root_raises_naming_the_layer_or_skips(monkeypatch):
    real = core_module.input_root

    def poisoned(layer, x, y, approx):
        root = real(layer, x, y, approx)
        return root.index_fill(-1, torch.tensor([0]), math.inf) if isinstance(layer.module, torch.nn.Linear) else root

    monkeypatch.setattr(core_module, "input_root", poisoned)
    kfac = KFAC(mixed_net(), torch.nn.CrossEntropyLoss(), approx="reduce")
    with pytest.raises(NonFiniteError, match="'linear'"):
        kfac.update(*_batch())
    kfac = KFAC(mixed_net(), torch.nn.CrossEntropyLoss(), approx="reduce", nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="'linear'"):
        kfac.update(*_batch())
    assert not kfac.factors


def test_a_root_whose_gram_overflows_is_caught():
    probes = core_module._finite_probes(KroneckerFactors(B=torch.eye(2), root=torch.full((3, 4), 1e20)))
    assert not all(bool(torch.isfinite(p).all()) for p in probes)
    probes = core_module._finite_probes(KroneckerFactors(B=torch.eye(2), root=torch.full((3, 4), 1e3)))
    assert all(bool(torch.isfinite(p).all()) for p in probes)


def test_kronecker_factors_need_b_and_a_or_a_root():
    with pytest.raises(TypeError, match="B"):
        KroneckerFactors(torch.eye(2))
    with pytest.raises(TypeError, match="root"):
        KroneckerFactors(B=torch.eye(2))
    f = KroneckerFactors(B=torch.eye(2), root=torch.ones(1, 3))
    f.A = torch.eye(3)  # setting A drops the root
    assert f.root is None and f.formed and math.isclose(float(f.A.trace()), 3.0)
    assert "root" in repr(KroneckerFactors(B=torch.eye(2), root=torch.ones(1, 3)))


def test_the_optimizer_state_keeps_roots_and_reads_states_without_them():
    from tnconv.kfac import KFACOptimizer

    model, loss_fn = mixed_net(), torch.nn.CrossEntropyLoss()
    opt = KFACOptimizer(model, loss_fn, lr=0.1, approx="reduce")
    x, t = _batch()
    loss_fn(model(x), t).backward()
    opt.step(x, t)
    state = opt.state_dict()
    A, B, root = state["factors"]["linear"]
    assert A is None and root is not None  # saved as its root, not as a formed 67×67 factor
    other = KFACOptimizer(model, loss_fn, lr=0.1, approx="reduce")
    other.load_state_dict(state)
    assert other.kfac.factors["linear"].root is not None
    legacy = dict(state, factors={n: (f.A, f.B) for n, f in opt.kfac.factors.items()})
    older = KFACOptimizer(model, loss_fn, lr=0.1, approx="reduce")
    older.load_state_dict(legacy)
    for name, f in opt.kfac.factors.items():
        torch.testing.assert_close(other.kfac.factors[name].A, f.A)
        torch.testing.assert_close(older.kfac.factors[name].A, f.A)
