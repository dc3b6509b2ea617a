"""Rank-aware eigenbases (tnconv.kfac.eigenbasis): roots reproduce the input factors of every
layer kind, their QR route gives orthonormal eigenbases, and EKFAC preconditions the same
whether it decomposes a factor from its root or densely (float64)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv.kfac.core as core_module
from tnconv.kfac import EKFAC
from tnconv.kfac.eigenbasis import eigh_from_root, input_root, merge_roots, root_route_cheaper, root_rows
from tnconv.kfac.layers import kronecker_layer

from .test_kfac_model import mixed_net
from .test_kfac_streaming import AllKinds

DTYPE = torch.float64

LAYERS = [
    (lambda: torch.nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2), (3, 4, 7, 7)),
    (lambda: torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False), (2, 2, 5, 5)),
    (lambda: torch.nn.Conv1d(4, 6, 3, dilation=2), (4, 9)),  # unbatched
    (lambda: torch.nn.Conv3d(2, 2, 2, bias=False), (2, 2, 3, 3, 3)),
    (lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (2, 4, 3, 3)),
    (lambda: torch.nn.Linear(5, 3), (4, 2, 5)),
    (lambda: torch.nn.Linear(5, 3), (5,)),
    (lambda: torch.nn.Linear(5, 3, bias=False), (6, 5)),
]


def assert_eigenbasis(values: torch.Tensor, vectors: torch.Tensor, A: torch.Tensor) -> None:
    d = A.shape[-1]
    torch.testing.assert_close(vectors.transpose(1, 2) @ vectors, torch.eye(d, dtype=DTYPE).expand_as(A))
    torch.testing.assert_close(vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2), A)


@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("make, shape", LAYERS)
def test_root_reproduces_the_input_factor(make, shape, approx):
    torch.manual_seed(0)
    module = make().to(DTYPE)
    x = torch.randn(shape, dtype=DTYPE)
    layer, y = kronecker_layer(module), module(x)
    A = layer.input_factor(x, y, approx)
    root = input_root(layer, x, y, approx)
    assert root.shape[1] == root_rows(layer, y, approx)
    torch.testing.assert_close(root.transpose(1, 2) @ root, A, rtol=1e-12, atol=1e-12)
    if root.shape[1] < root.shape[2]:
        assert_eigenbasis(*eigh_from_root(root), A)


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 3),
    rows=st.integers(1, 12),
    extra=st.integers(1, 20),
    rank=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_eigh_from_root_diagonalises_rank_deficient_factors(groups, rows, extra, rank, seed):
    """Orthonormal, ``Q Λ Qᵀ = A``, eigenvalues those of eigh — for roots of any rank ≤ rows
    (repeated and zero rows included)."""
    g = torch.Generator().manual_seed(seed)
    d = rows + extra
    rank = min(rank, rows)
    root = torch.randn(groups, rank, d, generator=g, dtype=DTYPE)
    mix = torch.randn(groups, rows, rank, generator=g, dtype=DTYPE)
    root = mix @ root if rank else torch.zeros(groups, rows, d, dtype=DTYPE)
    A = root.transpose(1, 2) @ root
    values, vectors = eigh_from_root(root)
    assert_eigenbasis(values, vectors, A)
    torch.testing.assert_close(values.sort(-1).values, torch.linalg.eigvalsh(A).clamp(min=0), atol=1e-10, rtol=1e-10)


def test_merged_root_is_the_root_of_the_ema():
    g = torch.Generator().manual_seed(1)
    old, new = torch.randn(2, 3, 9, generator=g, dtype=DTYPE), torch.randn(2, 4, 9, generator=g, dtype=DTYPE)
    gram = lambda j: j.transpose(1, 2) @ j  # noqa: E731
    torch.testing.assert_close(gram(merge_roots(old, new, 0.7)), 0.7 * gram(old) + 0.3 * gram(new))


def test_cost_estimate_prefers_the_root_only_when_short():
    assert root_route_cheaper(4608, 128) and root_route_cheaper(1152, 288)
    assert not root_route_cheaper(100, 100) and not root_route_cheaper(100, 90)


@pytest.mark.parametrize("ema", [None, 0.6])
@pytest.mark.parametrize("net", ["mixed", "all-kinds"])
def test_ekfac_expand_from_roots_equals_ekfac_from_dense_eigh(net, ema, monkeypatch):
    """For expand every per-sample gradient's rows lie in the range of ``A`` (built from the
    same unfolded inputs), so ``S`` vanishes on its null space and the preconditioner does not
    depend on which orthonormal basis spans it: both routes agree. (For reduce they need not:
    per-position inputs leave the range of ``Σ_o a``, EKFAC is then basis-dependent there, and
    tests/test_kfac_ekfac.py checks it against brute force in the bases tnconv chose.)"""
    approx = "expand"
    calls = []
    real = core_module.eigh_from_root

    def spy(root):
        calls.append(root.shape)
        return real(root)

    def run(dense: bool) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(5)
        torch.manual_seed(0)
        if net == "mixed":
            model, x = mixed_net(), torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE)
        else:
            model, x = AllKinds().to(DTYPE), torch.randn(3, 2, 6, generator=g, dtype=DTYPE)
        targets = torch.randint(0, 3, (3,), generator=g)
        loss_fn = torch.nn.CrossEntropyLoss()
        monkeypatch.setattr(core_module, "root_route_cheaper", (lambda d, r: False) if dense else root_route_cheaper)
        ekfac = EKFAC(
            model, loss_fn, approx=approx, fisher="mc", damping=0.1, ema=ema, generator=torch.Generator().manual_seed(9)
        )
        for step in range(2 if ema else 1):
            ekfac.update(x + step, targets)
        model.zero_grad()
        loss_fn(model(x), targets).backward()
        return ekfac.precondition({n: p.grad.clone() for n, p in model.named_parameters()})

    monkeypatch.setattr(core_module, "eigh_from_root", spy)
    dense = run(dense=True)
    assert not calls
    from_roots = run(dense=False)
    assert calls  # some layer had a short root
    for name, value in dense.items():
        torch.testing.assert_close(from_roots[name], value, rtol=1e-9, atol=1e-11)
