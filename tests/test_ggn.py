import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute.squares import square_recipe
from tnconv.symbolic.builders.ggn import ggn_factor_network as _factor

from .reference import TORCH_CONV
from .reference_curvature import layer_jacobians
from .strategies import conv_cases


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def reference_ggn(x, w_shape, s, kwargs, bias):
    """Rows J^T s_{m,n} of the GGN factor [M·N, #params] from per-sample Jacobians (torch.func)."""
    jac_w, jac_b = layer_jacobians(x, w_shape, kwargs)
    jac = torch.cat([jac_w, jac_b], dim=-1) if bias else jac_w
    m, n = s.shape[:2]
    return torch.einsum("mnr,nrp->mnp", s.reshape(m, n, -1), jac).reshape(m * n, -1)


@given(case=conv_cases(), columns=st.integers(1, 3))
def test_ggn_diagonal_and_gram_match_torch_func(case, columns):
    x, w, _ = case.tensors()
    kw = case.kwargs()
    y = TORCH_CONV[case.dims](x, w, None, **kw)
    s = torch.randn(columns, *y.shape, dtype=torch.float64)
    rows = reference_ggn(x, w.shape, s, kw, case.bias)
    diagonal, gram = rows.square().sum(0), rows @ rows.T
    if case.bias:
        result, result_b = tnconv.ggn_diagonal(x, s, case.kernel_size, **kw, bias=True)
        assert rel_err(result_b, diagonal[w.numel() :]) < 1e-10
    else:
        result = tnconv.ggn_diagonal(x, s, case.kernel_size, **kw)
    assert result.shape == w.shape
    assert rel_err(result, diagonal[: w.numel()].reshape(w.shape)) < 1e-10
    result_gram = tnconv.ggn_gram(x, s, case.kernel_size, **kw, bias=case.bias)
    assert result_gram.shape == (columns * x.shape[0],) * 2
    assert rel_err(result_gram, gram) < 1e-10
    # the networks, unsimplified (weight only)
    weight_rows = rows[:, : w.numel()]
    network = tnconv.networks.ggn_diagonal(x.shape, s.shape, case.kernel_size, **kw)
    for strategy in ("einsum", "auto"):
        assert (
            rel_err(network.contract(x=x, s=s, strategy=strategy), weight_rows.square().sum(0).reshape(w.shape)) < 1e-10
        )
    network = tnconv.networks.ggn_gram(x.shape, s.shape, case.kernel_size, **kw)
    for strategy in ("einsum", "auto"):
        assert rel_err(network.contract(x=x, s=s, strategy=strategy), weight_rows @ weight_rows.T) < 1e-10


def test_ggn_4d():
    kw = dict(stride=(2, 1, 1, 1), padding=(0, 1, 0, 1), dilation=(1, 1, 2, 1), groups=2)
    x = torch.randn(2, 2, 4, 3, 5, 2, dtype=torch.float64)
    w_shape = (4, 1, 2, 2, 2, 3)
    s = torch.randn(3, 2, 4, 2, 4, 3, 2, dtype=torch.float64)
    rows = reference_ggn(x, w_shape, s, kw, True)
    diag, diag_b = tnconv.ggn_diagonal(x, s, w_shape[2:], **kw, bias=True)
    torch.testing.assert_close(torch.cat([diag.flatten(), diag_b]), rows.square().sum(0))
    torch.testing.assert_close(tnconv.ggn_gram(x, s, w_shape[2:], **kw, bias=True), rows @ rows.T)


def test_gram_is_contracted_directly_when_cheaper():
    """Few positions, many channels: Σ over the weight legs of J J' is cheaper as one network
    (it never forms the [M·N, C_out·C_in·K] factor) than materialising J."""
    kw = dict(stride=2, padding=1)
    x = torch.randn(2, 32, 4, 4, dtype=torch.float64)
    s = torch.randn(3, 2, 32, 2, 2, dtype=torch.float64)
    recipe = square_recipe(_factor(x.shape, s.shape, 3, 2, 1, 1, 1, merged=True), (), (0,), 1.0)
    assert recipe.direct is not None and recipe.direct_flops < recipe.materialized_flops
    rows = torch.stack(
        [
            torch.nn.grad.conv2d_weight(x[n : n + 1], (32, 32, 3, 3), s[m, n : n + 1], **kw).flatten()
            for m in range(3)
            for n in range(2)
        ]
    )
    torch.testing.assert_close(tnconv.ggn_gram(x, s, 3, **kw), rows @ rows.T)
    torch.testing.assert_close(tnconv.ggn_diagonal(x, s, 3, **kw), rows.square().sum(0).reshape(32, 32, 3, 3))


def test_ggn_of_a_square_loss():
    """With L = ½‖conv(x, w) − y‖² summed, H = I, so s holds the unit vectors of each output
    entry and the GGN is Σ_n J_n^T J_n: its diagonal is the column sums of squared Jacobians."""
    x = torch.randn(2, 2, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 2, dtype=torch.float64)
    jac = torch.func.jacrev(lambda w_: F.conv1d(x, w_, stride=2))(w).reshape(-1, w.numel())  # [N·C_out·O, P]
    y_shape = F.conv1d(x, w, stride=2).shape  # [2, 3, 2]
    eye = torch.eye(6, dtype=torch.float64).reshape(6, 3, 2)
    s = torch.zeros(6, *y_shape, dtype=torch.float64)
    for n in range(2):
        s[:, n] = eye
    torch.testing.assert_close(tnconv.ggn_diagonal(x, s, 2, stride=2).flatten(), torch.diagonal(jac.T @ jac))


def test_bad_input():
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    s = torch.randn(3, 2, 6, 4, dtype=torch.float64)
    tnconv.ggn_diagonal(x, s, 3, groups=2)
    with pytest.raises(ValueError, match=r"s must have shape \[M, N, C_out, O_1\]"):
        tnconv.ggn_diagonal(x, s[0], 3)
    with pytest.raises(ValueError, match=r"= \(3, 2, 6, 4\)"):
        tnconv.ggn_gram(x, s[..., :2], 3)
    with pytest.raises(ValueError, match="s must have shape"):
        tnconv.ggn_gram(x, s[:, :1], 3)
    with pytest.raises(ValueError, match="kernel_size"):
        tnconv.ggn_diagonal(x, s, 8)
    with pytest.raises(ValueError, match="groups"):
        tnconv.ggn_gram(x, s, 3, groups=3)
    with pytest.raises(ValueError, match="s has 6 channels"):
        tnconv.ggn_diagonal(x, s, 3, groups=4)
    with pytest.raises(TypeError, match="s must be a torch.Tensor"):
        tnconv.ggn_gram(x, [[1.0]], 3)
