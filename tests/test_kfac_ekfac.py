"""EKFAC: corrections and preconditioned gradients against brute force from ``torch.func``
per-sample gradients (float64), and exactness where KFAC's eigenbasis is exact."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

import tnconv.kfac.ekfac as ekfac_module
from tnconv.kfac import EKFAC
from tnconv.kfac.loss import backprop_vectors

from .test_kfac_exact import CASES, build, exact_ggn, layer_index_matrix
from .test_kfac_model import mixed_net
from .test_kfac_streaming import AllKinds

DTYPE = torch.float64


def per_sample_matrices(model, x, vector):
    """``{layer name: [N, G, C_out/G, d]}``: per-sample gradients of ``<v_n, f_n>`` by torch.func."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def inner(p, xn, vn):
        return (functional_call(model, p, (xn.unsqueeze(0),))[0] * vn).sum()

    grads = vmap(grad(inner), in_dims=(None, 0, 0))(params, x, vector)
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            continue
        prefix = f"{name}." if name else ""
        flat = [grads[prefix + "weight"].flatten(1)]
        if module.bias is not None:
            flat.append(grads[prefix + "bias"].flatten(1))
        flat = torch.cat(flat, dim=1)  # [N, P] in torch order
        out[name] = flat[:, layer_index_matrix(module)]
    return out


def brute_force(ekfac, model, x, targets, vectors):
    """``S`` from per-sample gradients rotated into the eigenbases EKFAC used."""
    sums = {}
    for v in vectors:
        for name, G in per_sample_matrices(model, x, v).items():
            basis = ekfac.eigenbases[name]
            rotated = basis.B_eigvecs.transpose(1, 2) @ G @ basis.A_eigvecs
            sums[name] = sums.get(name, 0) + (rotated**2).sum(0)
    return sums


@pytest.mark.parametrize("chunk", ["default", "one sample"])
@pytest.mark.parametrize("order", ["auto", "gradient", "rotate"])
@pytest.mark.parametrize("fisher", ["type-2", "mc", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("net", ["mixed", "all-kinds"])
def test_corrections_and_preconditioning_match_brute_force(net, approx, fisher, order, chunk, monkeypatch):
    monkeypatch.setattr(ekfac_module, "order", order)
    if chunk == "one sample":  # every sample's rotated gradient is squared and summed on its own
        monkeypatch.setattr(ekfac_module, "chunk_bytes", 1)
    g = torch.Generator().manual_seed(5)
    if net == "mixed":
        model, x = mixed_net(), torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE)
    else:
        torch.manual_seed(0)
        model, x = AllKinds().to(DTYPE), torch.randn(3, 2, 6, generator=g, dtype=DTYPE)
    targets = torch.randint(0, 3, (3,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    ekfac = EKFAC(
        model,
        loss_fn,
        approx=approx,
        fisher=fisher,
        mc_samples=2,
        damping=0.1,
        generator=torch.Generator().manual_seed(9),
    )
    ekfac.update(x, targets)
    with torch.no_grad():
        output = model(x)
    vectors = backprop_vectors(loss_fn, output, targets, fisher, 2, torch.Generator().manual_seed(9))
    expected = brute_force(ekfac, model, x, targets, vectors)
    assert sorted(ekfac.corrections) == sorted(expected)
    for name, S in expected.items():
        torch.testing.assert_close(ekfac.corrections[name], S, rtol=1e-10, atol=1e-13)
        factors, basis = ekfac.factors[name], ekfac.eigenbases[name]
        A = factors.A if factors.A.dim() == 3 else factors.A[None]
        B = factors.B if factors.B.dim() == 3 else factors.B[None]
        # the bases are eigenbases of this update's factors
        for F, Q in ((A, basis.A_eigvecs), (B, basis.B_eigvecs)):
            rotated = Q.transpose(1, 2) @ F @ Q
            torch.testing.assert_close(rotated, torch.diag_embed(rotated.diagonal(dim1=1, dim2=2)), atol=1e-12, rtol=0)
    # preconditioned gradients: dense (Q_B ⊗ Q_A) diag(1/(S+λ)) (Q_B ⊗ Q_A)ᵀ per group, torch order
    model.zero_grad()
    loss_fn(model(x), targets).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    out = ekfac.precondition(grads)
    for name, layer in ekfac.layers.items():
        module = layer.module
        prefix = f"{name}." if name else ""
        keys = [prefix + "weight"] + ([prefix + "bias"] if module.bias is not None else [])
        flat = torch.cat([grads[k].reshape(-1) for k in keys])
        result = torch.cat([out[k].reshape(-1) for k in keys])
        index = layer_index_matrix(module)
        expected_flat = torch.empty_like(flat)
        basis = ekfac.eigenbases[name]
        for grp in range(index.shape[0]):
            Q = torch.kron(basis.B_eigvecs[grp], basis.A_eigvecs[grp])
            dense = Q @ torch.diag(1 / (expected[name][grp].reshape(-1) + 0.1)) @ Q.T
            rows = index[grp].reshape(-1)
            expected_flat[rows] = dense @ flat[rows]
        torch.testing.assert_close(result, expected_flat, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind, setting, reduction, mean", CASES)
def test_ekfac_is_exact_where_kfac_is(kind, setting, reduction, mean):
    """Where the GGN block is B ⊗ A (tests/test_kfac_exact.py) it is diagonal in the Kronecker
    eigenbasis with the eigenvalues EKFAC re-estimates: EKFAC solves (GGN + λI) p = g."""
    model, x, targets = build(kind, setting, mean)
    loss_fn, damping = torch.nn.MSELoss(reduction=reduction), 0.1
    ekfac = EKFAC(model, loss_fn, approx=setting, damping=damping)
    ekfac.update(x, targets)
    model.zero_grad()
    loss_fn(model(x), targets).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    preconditioned = ekfac.precondition(grads)
    for name in ekfac.layers:
        ggn, names = exact_ggn(model, name, x, targets, loss_fn)
        g_flat = torch.cat([grads[n].reshape(-1) for n in names])
        solved = torch.linalg.solve(ggn + damping * torch.eye(len(g_flat), dtype=DTYPE), g_flat)
        torch.testing.assert_close(torch.cat([preconditioned[n].reshape(-1) for n in names]), solved)


def test_one_sample_ekfac_equals_exact_gauss_newton_for_a_dense_last_layer():
    """One sample through a Linear layer without shared positions: the GGN block is
    (Σ_c s_c s_cᵀ) ⊗ a aᵀ = B ⊗ A exactly, for cross-entropy's non-constant Hessian too."""
    model = mixed_net()
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (1,), generator=g)
    loss_fn, damping = torch.nn.CrossEntropyLoss(), 1e-2
    ekfac = EKFAC(model, loss_fn, damping=damping)
    ekfac.update(x, t)
    model.zero_grad()
    loss_fn(model(x), t).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    out = ekfac.precondition(grads)
    ggn, names = exact_ggn(model, "linear", x, t, loss_fn)
    g_flat = torch.cat([grads[n].reshape(-1) for n in names])
    solved = torch.linalg.solve(ggn + damping * torch.eye(len(g_flat), dtype=DTYPE), g_flat)
    torch.testing.assert_close(torch.cat([out[n].reshape(-1) for n in names]), solved)
    # and the convolution before it, whose block is not a Kronecker product, is not exact
    ggn_c, names_c = exact_ggn(model, "conv1d", x, t, loss_fn)
    g_c = torch.cat([grads[n].reshape(-1) for n in names_c])
    solved_c = torch.linalg.solve(ggn_c + damping * torch.eye(len(g_c), dtype=DTYPE), g_c)
    assert (torch.cat([out[n].reshape(-1) for n in names_c]) - solved_c).norm() > 1e-3 * solved_c.norm()


def test_ekfac_arguments_and_skip():
    with pytest.raises(ValueError, match="inverse"):
        EKFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss(), inverse="factor")
    ekfac = EKFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss())
    with pytest.raises(RuntimeError, match="update"):
        ekfac.precondition()


@pytest.mark.parametrize("keep_factors", [True, False])
def test_optimizer_with_ekfac_steps_along_the_preconditioned_gradient_and_round_trips(keep_factors):
    from tnconv.kfac import KFACOptimizer

    model = mixed_net()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (4,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = KFACOptimizer(model, loss_fn, lr=0.5, damping=0.1, ekfac=True, keep_factors=keep_factors)
    assert isinstance(opt.kfac, EKFAC)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    loss_fn(model(x), t).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    reference = EKFAC(model, loss_fn, damping=0.1)
    reference.update(x, t)
    expected = reference.precondition(grads)
    opt.step(x, t)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.5 * expected[n])
    state = opt.state_dict()
    assert bool(opt.kfac.factors) == keep_factors
    fresh = KFACOptimizer(model, loss_fn, lr=0.5, damping=0.1, ekfac=True, keep_factors=keep_factors)
    fresh.load_state_dict(state)
    for name, s in opt.kfac.corrections.items():
        torch.testing.assert_close(fresh.kfac.corrections[name], s)
    torch.testing.assert_close(fresh.kfac.precondition(grads), opt.kfac.precondition(grads))


def test_chunk_bytes_must_be_a_positive_int(monkeypatch):
    model = mixed_net()
    x, t = torch.randn(2, 2, 7, 7, dtype=DTYPE), torch.tensor([0, 1])
    ekfac = EKFAC(model, torch.nn.CrossEntropyLoss())
    for bad in (0, -3, 1.5, True):
        monkeypatch.setattr(ekfac_module, "chunk_bytes", bad)
        with pytest.raises(ValueError, match="chunk_bytes"):
            ekfac.update(x, t)


@pytest.mark.parametrize(
    "ema, nonfinite, released", [(None, "raise", True), (0.5, "raise", False), (None, "skip", False)]
)
def test_old_bases_are_released_before_the_new_factors_exist_when_an_update_replaces_them(ema, nonfinite, released):
    """Without an EMA an update replaces bases and corrections: the old ones must be gone by
    the time the next factor pass runs (two sets are never live together). With an EMA, or
    with nonfinite="skip" (a skipped update keeps them), they must survive."""
    import weakref

    model = mixed_net()
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (4,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    ekfac = EKFAC(model, loss_fn, ema=ema, nonfinite=nonfinite, damping=0.1)
    ekfac.update(x, t)
    old = [weakref.ref(t_) for b in ekfac.eigenbases.values() for t_ in (b.A_eigvecs, b.B_eigvecs)]
    old += [weakref.ref(s) for s in ekfac.corrections.values()]
    alive_in_forward = []
    handle = model.conv1d.register_forward_hook(lambda *_: alive_in_forward.append([r() is not None for r in old]))
    try:
        ekfac.update(x, t)
    finally:
        handle.remove()
    # the first forward of the second update is its factor pass (the second its correction pass)
    assert alive_in_forward[0] == [not released] * len(old)
    # and the result is that of a fresh object (no EMA) or of the EMA of both updates
    reference = EKFAC(model, loss_fn, ema=ema, damping=0.1)
    reference.update(x, t)
    if ema is not None:
        reference.update(x, t)
    for name, S in reference.corrections.items():
        torch.testing.assert_close(ekfac.corrections[name], S, rtol=1e-12, atol=1e-14)


def test_a_failed_update_after_released_bases_asks_for_an_update():
    """The release must not leave bases missing beside stored factors: a non-finite loss
    (ema=None, nonfinite="raise") leaves no factors, and precondition() says to update."""
    from tnconv.kfac import NonFiniteError

    model = mixed_net()
    x, t = torch.randn(2, 2, 7, 7, dtype=DTYPE), torch.tensor([0, 1])
    ekfac = EKFAC(model, torch.nn.CrossEntropyLoss())
    ekfac.update(x, t)
    with pytest.raises(NonFiniteError):
        ekfac.update(torch.full_like(x, float("nan")), t)
    assert not ekfac.factors and not ekfac.eigenbases and not ekfac.corrections
    with pytest.raises(RuntimeError, match="update"):
        ekfac.precondition()


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_keep_factors_false_releases_each_factor_before_the_correction_pass_with_equal_results(approx):
    """keep_factors=False: every factor of the update is gone by the correction pass's forward
    (keep_factors=True: all alive), and bases, corrections, preconditioned gradients and the
    operator algebra equal those of keep_factors=True."""
    import weakref

    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(4, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (4,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    runs = {}
    for keep in (True, False):
        model = mixed_net()
        ekfac = EKFAC(model, loss_fn, approx=approx, damping=0.1, keep_factors=keep)
        refs, forwards = [], []
        bases_of = ekfac._bases

        def spy(factors, *args, refs=refs, bases_of=bases_of, **kwargs):
            refs += [weakref.ref(t_) for f in factors.values() for t_ in (f.A, f.B)]
            return bases_of(factors, *args, **kwargs)

        ekfac._bases = spy
        handle = model.conv2d.register_forward_hook(
            lambda *_, refs=refs, forwards=forwards: forwards.append([r() is not None for r in refs])
        )
        ekfac.update(x, t)
        handle.remove()
        # forward 0: the factor pass (nothing captured yet); forward 1: the correction pass
        assert len(forwards) == 2 and len(refs) == 8
        assert forwards[1] == [keep] * len(refs)
        assert bool(ekfac.factors) == keep
        model.zero_grad()
        loss_fn(model(x), t).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        runs[keep] = (ekfac, ekfac.precondition(grads), ekfac.trace(), ekfac.inverse_operator().logdet())
    (kept, out_kept, tr_kept, ld_kept), (dropped, out_dropped, tr_dropped, ld_dropped) = runs[True], runs[False]
    for name, S in kept.corrections.items():
        torch.testing.assert_close(dropped.corrections[name], S, rtol=0, atol=0)
        torch.testing.assert_close(dropped.eigenbases[name].A_eigvecs, kept.eigenbases[name].A_eigvecs, rtol=0, atol=0)
    for name, value in out_kept.items():
        torch.testing.assert_close(out_dropped[name], value, rtol=0, atol=0)
    torch.testing.assert_close(tr_dropped, tr_kept, rtol=0, atol=0)
    torch.testing.assert_close(ld_dropped, ld_kept, rtol=0, atol=0)


def test_keep_factors_argument():
    with pytest.raises(TypeError, match="keep_factors"):
        EKFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss(), keep_factors="no")
    with pytest.raises(ValueError, match="keep_factors"):
        EKFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss(), ema=0.5, keep_factors=False)
    ekfac = EKFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss(), keep_factors=False)
    with pytest.raises(RuntimeError, match="update"):
        ekfac.precondition()
