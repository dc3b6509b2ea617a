"""KFAC / EKFAC as linear operators: products, inverse, trace, log-determinant, determinant
and Frobenius norm against the dense block-diagonal Kronecker matrix (float64)."""

from __future__ import annotations

import pytest
import torch

from tnconv.kfac import EKFAC, KFAC

from .test_kfac_exact import layer_index_matrix
from .test_kfac_model import mixed_net

DTYPE = torch.float64


def dense_blocks(obj):
    """The dense ``[P, P]`` matrix in torch's parameter order (each layer's weight, then bias)."""
    blocks, offset, total = [], 0, 0
    for name in obj.factors:
        module = obj.layers[name].module
        index = layer_index_matrix(module)  # positions inside the layer's flat (weight, bias)
        size = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        block = torch.zeros(size, size, dtype=DTYPE)
        for g in range(index.shape[0]):
            rows = index[g].reshape(-1)
            if isinstance(obj, EKFAC):
                basis = obj.eigenbases[name]
                Q = torch.kron(basis.B_eigvecs[g], basis.A_eigvecs[g])
                local = Q @ torch.diag(obj.corrections[name][g].reshape(-1)) @ Q.T
            else:
                f = obj.factors[name]
                A, B = (f.A, f.B) if f.A.dim() == 3 else (f.A[None], f.B[None])
                local = torch.kron(B[g], A[g])
            block[rows[:, None], rows[None, :]] = local
        blocks.append(block)
        offset += size
        total += size
    return torch.block_diag(*blocks)


def fitted(kind):
    model = mixed_net()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (5,), generator=g)
    obj = (EKFAC if kind == "ekfac" else KFAC)(model, torch.nn.CrossEntropyLoss(), damping=0.05)
    obj.update(x, t)
    return obj


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_operator_against_dense_matrix(kind):
    obj = fitted(kind)
    dense = dense_blocks(obj)
    op = obj.operator()
    assert op.shape == dense.shape
    params = obj.parameters()
    assert sum(p.numel() for p in params) == dense.shape[0]
    g = torch.Generator().manual_seed(1)
    v = torch.randn(dense.shape[0], generator=g, dtype=DTYPE)
    V = torch.randn(dense.shape[0], 3, generator=g, dtype=DTYPE)
    torch.testing.assert_close(obj @ v, dense @ v)
    torch.testing.assert_close(op.matvec(V), dense @ V)
    parts = list(v.split([p.numel() for p in params]))
    as_list = obj.matvec([t.reshape(p.shape) for t, p in zip(parts, params)])
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in as_list]), dense @ v)
    torch.testing.assert_close(op.to_dense(), dense)
    torch.testing.assert_close(obj.trace(), torch.trace(dense))
    torch.testing.assert_close(obj.frobenius_norm(), torch.linalg.matrix_norm(dense))
    damped = dense + 0.3 * torch.eye(dense.shape[0], dtype=DTYPE)
    inverse = obj.inverse_operator(damping=0.3)
    torch.testing.assert_close(inverse @ v, torch.linalg.solve(damped, v))
    torch.testing.assert_close(inverse.logdet(), -torch.linalg.slogdet(damped).logabsdet)
    torch.testing.assert_close(inverse.trace(), torch.trace(torch.linalg.inv(damped)))
    default = obj.inverse_operator()  # the object's own damping
    torch.testing.assert_close(default @ v, torch.linalg.solve(dense + 0.05 * torch.eye(len(v), dtype=DTYPE), v))


def test_logdet_and_det_of_a_full_rank_kronecker_operator():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 2, bias=False)).to(DTYPE)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(20, 2, generator=g, dtype=DTYPE), torch.randn(20, 2, generator=g, dtype=DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss())
    kfac.update(x, t)
    dense = dense_blocks(kfac)
    sign, logabs = torch.linalg.slogdet(dense)
    assert sign > 0
    torch.testing.assert_close(kfac.logdet(), logabs)
    torch.testing.assert_close(kfac.det(), torch.linalg.det(dense))


def test_singular_operator_has_logdet_minus_infinity():
    model = torch.nn.Linear(6, 2).to(DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss())
    kfac.update(torch.randn(3, 6, dtype=DTYPE), torch.randn(3, 2, dtype=DTYPE))  # A has rank ≤ 3 < 7
    assert kfac.logdet() == -float("inf")


def test_operator_errors():
    kfac = KFAC(torch.nn.Linear(2, 2), torch.nn.MSELoss())
    with pytest.raises(RuntimeError, match="update"):
        kfac @ torch.ones(6)
    kfac.update(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="v must"):
        kfac @ torch.ones(5)
    with pytest.raises(TypeError, match="v must"):
        kfac @ [torch.ones(2, 2)]
    with pytest.raises(ValueError, match=r"v\[1\]"):
        kfac @ [torch.ones(2, 2), torch.ones(3)]
    with pytest.raises(ValueError, match="damping"):
        kfac.inverse_operator(damping=0.0)
