"""Pointwise convolutions (1×1…, stride 1, no padding) as matrix products, against PyTorch in float64."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.execute.native import recognize

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@st.composite
def pointwise_cases(draw):
    dims = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    one_position = draw(st.booleans())
    spatial = (1,) * dims if one_position else tuple(draw(st.integers(1, 4)) for _ in range(dims))
    batch = draw(st.integers(1, 4))
    return dims, groups, c_in, c_out, spatial, batch


@settings(deadline=None, max_examples=60)
@given(case=pointwise_cases(), bias=st.booleans())
def test_pointwise_forward_and_vjps_match_torch(case, bias):
    dims, groups, c_in, c_out, spatial, batch = case
    x = torch.randn(batch, c_in, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in // groups, *(1,) * dims, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True) if bias else None
    y = tnconv.conv(x, w, b, groups=groups)
    reference = CONV[dims](x, w, b, groups=groups)
    torch.testing.assert_close(y, reference)
    v = torch.randn_like(y)
    inputs = (x, w) if b is None else (x, w, b)
    for got, want in zip(torch.autograd.grad(y, inputs, v), torch.autograd.grad(reference, inputs, v)):
        torch.testing.assert_close(got, want)
    # the functional VJPs, the input VJP with extra leading dimensions (several vectors)
    V = torch.randn(2, *y.shape, dtype=torch.float64)
    got = tnconv.conv_input_vjp(w.detach(), V, spatial, groups=groups)
    for m in range(2):
        want = getattr(torch.nn.grad, f"conv{dims}d_input")(x.shape, w.detach(), V[m], groups=groups)
        torch.testing.assert_close(got[m], want)
    want = getattr(torch.nn.grad, f"conv{dims}d_weight")(x.detach(), w.shape, V[0], groups=groups)
    torch.testing.assert_close(tnconv.conv_weight_vjp(x.detach(), V[0], (1,) * dims, groups=groups), want)


@settings(deadline=None, max_examples=30)
@given(case=pointwise_cases(), bias=st.booleans())
def test_pointwise_transposed_convolution_matches_torch(case, bias):
    dims, groups, c_in, c_out, spatial, batch = case
    x = torch.randn(batch, c_in, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_in, c_out // groups, *(1,) * dims, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True) if bias else None
    reference = TRANSPOSE[dims](x, w, b, groups=groups)
    with torch.no_grad():  # the bias fused into the GEMM on one position
        torch.testing.assert_close(tnconv.conv_transpose(x, w, b, groups=groups), reference)
    y = tnconv.conv_transpose(x, w, b, groups=groups)
    torch.testing.assert_close(y, reference)
    v = torch.randn_like(y)
    inputs = (x, w) if b is None else (x, w, b)
    for got, want in zip(torch.autograd.grad(y, inputs, v), torch.autograd.grad(reference, inputs, v)):
        torch.testing.assert_close(got, want)


def test_nan_reaches_what_torch_reaches():
    x, w = torch.randn(2, 4, 3, 3), torch.randn(6, 4, 1, 1)
    v = torch.randn(2, 6, 3, 3)
    v[1, 2, 0, 1] = float("nan")
    got = tnconv.conv_input_vjp(w, v, (3, 3))
    want = torch.nn.grad.conv2d_input(x.shape, w, v)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    x1 = torch.randn(3, 4, 1, 1)
    x1[0, 1] = float("inf")
    assert torch.equal(tnconv.conv(x1, w).isnan(), F.conv2d(x1, w).isnan())


def _call(network):
    call = recognize(network)
    assert call is not None
    return call


def test_which_calls_are_matrix_products():
    conv = tnconv.networks.conv
    assert _call(conv((2, 4, 8, 8), (6, 4, 1, 1)).vjp("x")).matrix_product  # input VJP, maps of >= 64 positions
    assert _call(conv((2, 4, 1, 1), (6, 4, 1, 1)).vjp("x")).matrix_product  # ... or of one
    assert not _call(conv((2, 4, 7, 9), (6, 4, 1, 1)).vjp("x")).matrix_product  # 63 positions: torch's kernel
    assert _call(conv((2, 4, 1, 1), (6, 4, 1, 1))).matrix_product  # forward on one position
    assert _call(conv((2, 4, 1, 1), (6, 2, 1, 1), groups=2).vjp("w")).matrix_product
    assert not _call(conv((2, 4, 5, 5), (6, 4, 1, 1))).matrix_product  # forward on a map: torch's kernel
    assert not _call(conv((2, 4, 5, 5), (6, 4, 1, 1), stride=2).vjp("x")).matrix_product
    assert not _call(conv((2, 4, 5, 5), (6, 4, 1, 1), padding=1).vjp("x")).matrix_product
    assert not _call(conv((2, 4, 5, 5), (6, 4, 3, 3)).vjp("x")).matrix_product
    steps = tnconv.explain(conv((2, 4, 8, 8), (6, 4, 1, 1)).vjp("x")).steps
    assert "matrix product" in steps[0]
