"""Small 1-d weight VJPs as one im2col GEMM (``tnconv.execute.small_vjp``): the GEMM against
``torch.nn.grad.conv1d_weight`` in float64 for any geometry, the route choice, and the
front-ends that take it (the native strategy and the tile estimators)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import small_vjp
from tnconv.randomized import estimators

CPU = torch.device("cpu")


@given(
    batch=st.integers(1, 4),
    c_in=st.integers(1, 4),
    c_out=st.integers(1, 4),
    length=st.integers(1, 20),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_gemm_weight_vjp_matches_torch(batch, c_in, c_out, length, kernel, stride, padding, dilation):
    span = dilation * (kernel - 1) + 1
    if length + 2 * padding < span:
        return
    x = torch.randn(batch, c_in, length, dtype=torch.float64)
    outputs = (length + 2 * padding - span) // stride + 1
    v = torch.randn(batch, c_out, outputs, dtype=torch.float64)
    expected = torch.nn.grad.conv1d_weight(x, (c_out, c_in, kernel), v, stride, padding, dilation)
    ours = small_vjp.gemm_weight_vjp_1d(x, v, kernel, stride, padding, dilation)
    torch.testing.assert_close(ours, expected)


def test_route_choice():
    small = (32, 64, 64, 7, 3, 5)  # m5_audio/9's last layer on half its batch: oneDNN's fixed cost dominates
    assert small_vjp.prefers_gemm(*small, torch.float32, CPU)
    assert not small_vjp.prefers_gemm(*small, torch.float64, CPU)  # no oneDNN call to avoid
    assert not small_vjp.prefers_gemm(*small, torch.float32, torch.device("cuda"))
    assert not small_vjp.prefers_gemm(*small, torch.float32, CPU, groups=2)
    assert not small_vjp.prefers_gemm(1, *small[1:], torch.float32, CPU)  # one sample: torch's own im2col already
    # a 196 MB im2col buffer: never (memory), whatever the estimates say
    assert not small_vjp.prefers_gemm(64, 256, 256, 1000, 3, 998, torch.float32, CPU)
    # the two estimates, by hand from the constants, decide it
    batch, c_in, c_out, length, kernel, outputs = small
    madds = c_out * c_in * kernel * batch * outputs
    x_bytes, v_bytes = 4 * batch * c_in * length, 4 * batch * c_out * outputs
    j_bytes = 4 * c_in * kernel * batch * outputs
    k, g = small_vjp.KERNEL_SECONDS, small_vjp.GEMM_SECONDS
    kernel_time = k[0] + k[1] * madds + k[2] * x_bytes + k[3] * v_bytes
    gemm_time = g[0] + g[1] * madds + g[2] * j_bytes + g[3] * v_bytes + g[4] * x_bytes
    assert gemm_time < kernel_time


@pytest.fixture
def gemm_calls(monkeypatch):
    calls = []
    original = small_vjp.gemm_weight_vjp_1d

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(small_vjp, "gemm_weight_vjp_1d", counting)
    return calls


def test_native_weight_vjp_takes_the_gemm_where_chosen(gemm_calls):
    x, v = torch.randn(8, 64, 7), torch.randn(8, 64, 5)
    first, again = tnconv.conv_weight_vjp(x, v, 3), tnconv.conv_weight_vjp(x, v, 3)  # (the second: bound runner)
    assert gemm_calls == [x.shape, x.shape]
    for ours in (first, again):
        torch.testing.assert_close(ours, torch.nn.grad.conv1d_weight(x, (64, 64, 3), v), rtol=1e-4, atol=1e-4)
    gemm_calls.clear()
    x64, v64 = x.double(), v.double()
    torch.testing.assert_close(tnconv.conv_weight_vjp(x64, v64, 3), torch.nn.grad.conv1d_weight(x64, (64, 64, 3), v64))
    assert gemm_calls == []  # float64: torch's kernel


def test_tile_estimator_calls_the_gemm_on_its_kept_samples(gemm_calls):
    x, v = torch.randn(64, 64, 7), torch.randn(64, 64, 5)
    generator = torch.Generator().manual_seed(0)
    estimate = estimators.conv_weight_vjp(x, v, 3, keep=0.5, mode="fixed", generator=generator)
    assert gemm_calls and all(shape[0] == 32 for shape in gemm_calls)
    # the same draw by hand: 32 of the 64 samples, scaled by 2 (fixed mode, one tile per sample)
    kept = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:32].sort().values
    expected = 2 * torch.nn.grad.conv1d_weight(x[kept], (64, 64, 3), v[kept])
    torch.testing.assert_close(estimate, expected, rtol=1e-4, atol=1e-4)


def test_keep_one_is_the_exact_vjp_on_the_gemm_route(gemm_calls):
    x, v = torch.randn(8, 64, 7), torch.randn(8, 64, 5)
    exact = tnconv.conv_weight_vjp(x, v, 3)
    assert torch.equal(estimators.conv_weight_vjp(x, v, 3, keep=1.0), exact)
    assert len(gemm_calls) == 2  # both took the GEMM


def test_explain_names_the_route():
    small = tnconv.networks.conv_weight_vjp((8, 64, 7), (64, 64, 3))
    assert "im2col GEMM" in tnconv.explain(small).steps[0]
    assert "kernel" in tnconv.explain(small, dtype=torch.float64).steps[0]  # float64: torch's kernel
    large = tnconv.networks.conv_weight_vjp((64, 32, 124), (32, 32, 3))
    assert "kernel" in tnconv.explain(large).steps[0]
