import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.func import jacrev

import tnconv

from .reference_curvature import (
    factor_reference,
    unfold_reference,
    unfold_transpose_reference,
)
from .strategies import conv_cases

FACTORS = {"expand": tnconv.kfc_factor, "reduce": tnconv.kfac_reduce_factor}
FACTORS_T = {"expand": tnconv.kfc_factor_transpose, "reduce": tnconv.kfac_reduce_factor_transpose}
NETWORKS = {"expand": tnconv.networks.kfc, "reduce": tnconv.networks.kfac_reduce}
NETWORKS_T = {"expand": tnconv.networks.kfc_transpose, "reduce": tnconv.networks.kfac_reduce_transpose}


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ------------------------------------------------------------------ the references themselves


def test_unfold_reference_matches_torch_unfold():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    expected = F.unfold(x, (3, 2), **kw)
    torch.testing.assert_close(unfold_reference(x, (3, 2), kw["stride"], kw["padding"], kw["dilation"]), expected)


def test_unfold_transpose_reference_is_adjoint_of_unfold():
    """Σ_i U_T[n,(c,k),i] z[n,c,i] = Σ_o x[n,c,o] unfold(z)[n,(c,k),o]: the two unfolds share Π."""
    kernel, stride, padding, output_padding, dilation = (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    u_t = unfold_transpose_reference(x, kernel, stride, padding, output_padding, dilation)  # [N, C·K, I']
    out_size = [
        (o - 1) * s - 2 * p + d * (k - 1) + op + 1
        for o, s, p, d, k, op in zip(x.shape[2:], stride, padding, dilation, kernel, output_padding)
    ]
    z = torch.randn(2, 3, *out_size, dtype=torch.float64)
    # the forward convolution from I' to O: padding P on the left, P - output_padding on the right
    zp = F.pad(z, [padding[1], padding[1] - output_padding[1], padding[0], padding[0] - output_padding[0]])
    u = F.unfold(zp, kernel, dilation=dilation, stride=stride)  # [N, C·K, O]
    assert u.shape[-1] == math.prod(x.shape[2:])
    lhs = torch.einsum("nckp,ncp->nck", u_t.view(2, 3, 6, -1), z.flatten(2))
    rhs = torch.einsum("nckp,ncp->nck", u.view(2, 3, 6, -1), x.flatten(2))
    torch.testing.assert_close(lhs, rhs)


# ------------------------------------------------------------------------ convolution factors


def check_factor(x, approx, bias, kernel, stride, padding, dilation, groups, dims_ok_for_network=True):
    expected = factor_reference(unfold_reference(x, kernel, stride, padding, dilation), groups, approx, bias)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    result = FACTORS[approx](x, kernel, **kw, bias=bias)
    assert result.shape == expected.shape
    assert rel_err(result, expected) < 1e-10
    if dims_ok_for_network:
        network = NETWORKS[approx](x.shape, kernel, **kw)
        plain = expected[:, :-1, :-1] if bias else expected
        assert rel_err(network.contract(x=x, strategy="einsum"), plain) < 1e-10  # dense, unsimplified
        assert rel_err(network.contract(x=x), plain) < 1e-10


@given(case=conv_cases(), approx=st.sampled_from(["expand", "reduce"]), bias=st.booleans())
def test_factors_match_unfold(case, approx, bias):
    x, _, _ = case.tensors()
    check_factor(x, approx, bias, case.kernel_size, case.stride, case.padding, case.dilation, case.groups)


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_factors_4d(approx):
    x = torch.randn(2, 4, 4, 5, 3, 4, dtype=torch.float64)
    check_factor(x, approx, True, (2, 3, 1, 2), (1, 2, 1, 2), (1, 0, 1, 0), (2, 1, 1, 1), 2)
    check_factor(x, approx, False, (3, 3, 3, 3), (1, 1, 1, 1), "same", (1, 2, 1, 1), 4)


def test_kfc_network_reads_x_twice():
    tn = tnconv.networks.kfc((2, 4, 6), 3, groups=2)
    assert tn.inputs == ("x",)
    assert [n.name for n in tn.nodes if n.kind == "input"] == ["x", "x'"]
    assert [n.kind for n in tn.nodes].count("pattern") == 2
    reduce = tnconv.networks.kfac_reduce((2, 4, 6), 3, groups=2)
    # KFAC-reduce sums the output positions of each copy separately: o1 and o1'
    assert {"o1", "o1'"} <= set(reduce.legs) and "o1'" not in tn.legs


@st.composite
def transpose_cases(draw):
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    sizes = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    full = [
        (o - 1) * s - 2 * p + d * (k - 1) + op + 1
        for o, s, p, d, k, op in zip(sizes, stride, padding, dilation, kernel, output_padding)
    ]
    assume(all(i > 0 for i in full))
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 3))
    return (batch, channels) + sizes, dict(
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )


@given(case=transpose_cases(), approx=st.sampled_from(["expand", "reduce"]), bias=st.booleans())
def test_transpose_factors_match_unfold(case, approx, bias):
    shape, kw = case
    x = torch.randn(*shape, dtype=torch.float64)
    unfolded = unfold_transpose_reference(
        x, kw["kernel_size"], kw["stride"], kw["padding"], kw["output_padding"], kw["dilation"]
    )
    expected = factor_reference(unfolded, kw["groups"], approx, bias)
    result = FACTORS_T[approx](x, **kw, bias=bias)
    assert result.shape == expected.shape
    assert rel_err(result, expected) < 1e-10
    plain = expected[:, :-1, :-1] if bias else expected
    network = NETWORKS_T[approx](x.shape, **kw)
    for strategy in ("einsum", "auto"):
        assert rel_err(network.contract(x=x, strategy=strategy), plain) < 1e-10


def pattern_by_loops(in_size, out_size, kernel, stride, padding, dilation):
    """Π[i, o, k] = 1 iff i = S·o + Dl·k − P (docs/reference.md §2), filled entry by entry."""
    pi = torch.zeros(in_size, out_size, kernel, dtype=torch.float64)
    for o in range(out_size):
        for k in range(kernel):
            i = stride * o + dilation * k - padding
            if 0 <= i < in_size:
                pi[i, o, k] = 1
    return pi


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_transpose_factors_4d(approx):
    """D = 4 has no torch transposed convolution: unfold x[n,c,o] Π[i,o,k] with loop-built Π."""
    kernel, stride, padding, output_padding, dilation = (
        (2, 3, 1, 2),
        (2, 1, 3, 1),
        (1, 1, 0, 0),
        (1, 0, 2, 0),
        (1, 1, 1, 2),
    )
    x = torch.randn(2, 4, 2, 3, 2, 2, dtype=torch.float64)
    full = [
        (o - 1) * s - 2 * p + d * (k - 1) + op + 1
        for o, s, p, d, k, op in zip(x.shape[2:], stride, padding, dilation, kernel, output_padding)
    ]
    pis = [
        pattern_by_loops(i, o, k, s, p, d)
        for i, o, k, s, p, d in zip(full, x.shape[2:], kernel, stride, padding, dilation)
    ]
    u = torch.einsum("ncabde,Aak,Bbl,Ddm,Eep->ncklmpABDE", x, *pis).reshape(2, 4 * 12, -1)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=2)
    expected = factor_reference(u, 2, approx, True)
    torch.testing.assert_close(FACTORS_T[approx](x, kernel, **kw, bias=True), expected)


# --------------------------------------------------------------------- output-gradient factor


def test_output_grad_factor_matches_loops():
    g = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    groups, co = 3, 2
    expand = tnconv.output_grad_factor(g, "expand", groups=groups)
    reduce = tnconv.output_grad_factor(g, "reduce", groups=groups)
    for grp in range(groups):
        block = g[:, grp * co : (grp + 1) * co]  # [N, Co, 4, 5]
        e = sum(torch.outer(block[n, :, i, j], block[n, :, i, j]) for n in range(3) for i in range(4) for j in range(5))
        torch.testing.assert_close(expand[grp], e / 20)
        r = sum(torch.outer(block[n].sum((1, 2)), block[n].sum((1, 2))) for n in range(3))
        torch.testing.assert_close(reduce[grp], r)


# ---------------------------------------------------------------- KFAC = exact GGN where it must


def group_ggn_blocks(jac_w, jac_b, hessian_sqrt_columns, groups):
    """Exact GGN blocks Σ (S^T J_g)^T (S^T J_g) of each group's [W_g | b_g] (row-major).

    jac_w: [R, C_out, Ci, K…] Jacobian of R outputs w.r.t. the weight (in the layout
    [C_out, Ci·∏K] after flattening), jac_b: [R, C_out], hessian_sqrt_columns: [R, M].
    """
    r, c_out = jac_b.shape
    jac = torch.cat([jac_w.reshape(r, c_out, -1), jac_b.unsqueeze(-1)], dim=-1)  # [R, C_out, d+1]
    co = c_out // groups
    blocks = []
    for g in range(groups):
        j = hessian_sqrt_columns.T @ jac[:, g * co : (g + 1) * co].reshape(r, -1)  # [M, Co·(d+1)]
        blocks.append(j.T @ j)
    full = hessian_sqrt_columns.T @ jac.reshape(r, -1)
    return blocks, full.T @ full


def test_kfac_expand_exact_for_one_sample_one_position():
    """KFAC-expand is exact for N = 1 and a single output position.

    With one position the layer is z = W_g u + b_g (per group) for one vector u. The GGN of a
    loss with Hessian H = S S^T at z is J^T H J with J = I ⊗ [u; 1]^T (row-major [W_g | b_g]):
    J^T S S^T J = Σ_m (s_m s_m^T) ⊗ (ũ ũ^T) with ũ = [u; 1]. The factors give
    A = (1/N) Σ_{n,o} ũ ũ^T = ũ ũ^T and B = (1/|O|) Σ_{m,n,o} s s^T = S S^T, so B ⊗ A is the
    exact block (within a group; blocks between groups are not part of KFAC).
    """
    torch.manual_seed(0)
    groups, kw = 2, dict(stride=2, padding=1, dilation=2)
    x = torch.randn(1, 4, 2, 4, dtype=torch.float64)
    w, b = torch.randn(6, 2, 2, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    conv = lambda w_, b_: F.conv2d(x, w_, b_, groups=groups, **kw)
    assert conv(w, b).shape[2:] == (1, 1)
    jac_w, jac_b = jacrev(conv, argnums=(0, 1))(w, b)
    root = torch.randn(6, 5, dtype=torch.float64)  # H = root root^T, M = 5 columns
    blocks, _ = group_ggn_blocks(jac_w.reshape(6, 6, 2, 2, 3), jac_b.reshape(6, 6), root, groups)
    s = root.T.reshape(5, 1, 6, 1, 1)  # [M, N, C_out, O1, O2]
    A = tnconv.kfc_factor(x, (2, 3), groups=groups, bias=True, **kw)
    B = tnconv.output_grad_factor(s.flatten(0, 1), "expand", groups=groups)
    for g in range(groups):
        torch.testing.assert_close(torch.kron(B[g], A[g]), blocks[g])


def test_kfac_reduce_exact_for_summed_outputs_under_square_loss():
    """KFAC-reduce is exact when the outputs are summed over positions before a square loss.

    (Eschenhagen et al., 2023.) With f_n = Σ_o z_{n,o} = |O| [W | b] ū_n, ū_n = [mean_o u; 1],
    and L = Σ_n ½‖f_n − y_n‖², the GGN is Σ_n J_n^T J_n with J_n = |O| I ⊗ ū_n^T, i.e.
    |O|² I ⊗ Σ_n ū_n ū_n^T. The backpropagated Hessian square root is s[m, n, c, o] = δ(m, c)
    at every position, so ḡ = Σ_o s = |O| e_m and B = Σ_{m,n} ḡ ḡ^T = N |O|² I, while
    A = (1/N) Σ_n ū ū^T: B ⊗ A = |O|² I ⊗ Σ_n ū ū^T, the exact GGN. Different groups see
    disjoint e_m, so the GGN is block-diagonal over groups and the blocks are all there is.
    """
    torch.manual_seed(1)
    groups, kw = 3, dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    w, b = torch.randn(6, 1, 2, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    model = lambda w_, b_: F.conv2d(x, w_, b_, groups=groups, **kw).sum((2, 3))  # [N, C_out]
    jac_w, jac_b = jacrev(model, argnums=(0, 1))(w, b)  # [N, C_out, C_out, 1, 2, 3], [N, C_out, C_out]
    eye = torch.eye(6, dtype=torch.float64)
    blocks, full = group_ggn_blocks(
        jac_w.reshape(24, 6, 1, 2, 3), jac_b.reshape(24, 6), torch.block_diag(*[eye] * 4), groups
    )
    # the loss Hessian (identity) square root, backpropagated through the position sum
    out = F.conv2d(x, w, b, groups=groups, **kw)
    _, pullback = torch.func.vjp(lambda z: z.sum((2, 3)), out)
    s = torch.stack([pullback(eye[m].expand(4, 6).contiguous())[0] for m in range(6)])  # [M, N, C_out, O1, O2]
    A = tnconv.kfac_reduce_factor(x, (2, 3), groups=groups, bias=True, **kw)
    B = tnconv.output_grad_factor(s.flatten(0, 1), "reduce", groups=groups)
    torch.testing.assert_close(torch.block_diag(*[torch.kron(B[g], A[g]) for g in range(groups)]), full)
    for g in range(groups):
        torch.testing.assert_close(torch.kron(B[g], A[g]), blocks[g])


def test_kfac_reduce_transpose_exact_for_summed_outputs_under_square_loss():
    """The same argument for a transposed convolution: positions are its output positions I',
    and group g's weight matrix is w[g·Ci:(g+1)·Ci] ([Ci, Co, K…]) read as [Co, Ci·∏K]."""
    torch.manual_seed(2)
    groups, kw = 2, dict(stride=2, padding=1, output_padding=1, dilation=1)
    x = torch.randn(3, 4, 3, dtype=torch.float64)
    w, b = torch.randn(4, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    model = lambda w_, b_: F.conv_transpose1d(x, w_, b_, groups=groups, **kw).sum(2)  # [N, C_out=6]
    jac_w, jac_b = jacrev(model, argnums=(0, 1))(w, b)  # [N, 6, 4, 3, 3], [N, 6, 6]
    # reorder the weight Jacobian to the per-group [Co, Ci, K] layout: [N, 6, (g co), ci, k]
    jw = jac_w.reshape(3, 6, groups, 2, 3, 3).permute(0, 1, 2, 4, 3, 5).reshape(18, 6, 2, 3)
    eye = torch.eye(6, dtype=torch.float64)
    blocks, _ = group_ggn_blocks(jw, jac_b.reshape(18, 6), torch.block_diag(*[eye] * 3), groups)
    positions = F.conv_transpose1d(x, w, b, groups=groups, **kw).shape[-1]
    s = eye.reshape(6, 1, 6, 1).expand(6, 3, 6, positions)  # backpropagated through the sum
    A = tnconv.kfac_reduce_factor_transpose(x, 3, groups=groups, bias=True, **kw)
    B = tnconv.output_grad_factor(s.flatten(0, 1), "reduce", groups=groups)
    for g in range(groups):
        torch.testing.assert_close(torch.kron(B[g], A[g]), blocks[g])


# ---------------------------------------------------------------------------------- bad input


def test_bad_input():
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="kernel_size"):
        tnconv.kfc_factor(x, 7)
    with pytest.raises(ValueError, match="groups"):
        tnconv.kfac_reduce_factor(x, 3, groups=3)
    with pytest.raises(ValueError, match="padding='same'"):
        tnconv.kfc_factor(x, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="x must have"):
        tnconv.kfc_factor(x[0, 0], 3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        tnconv.kfc_factor([1.0], 3)
    with pytest.raises(ValueError, match="output_padding"):
        tnconv.kfc_factor_transpose(x, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="groups"):
        tnconv.kfac_reduce_factor_transpose(x, 3, groups=3)
    with pytest.raises(ValueError, match="approx"):
        tnconv.output_grad_factor(x, "mean")
    with pytest.raises(ValueError, match="groups"):
        tnconv.output_grad_factor(x, groups=3)
    with pytest.raises(ValueError, match="x_shape"):
        tnconv.networks.kfc((2, 4), 3)
