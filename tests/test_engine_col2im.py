"""The "col2im" lowering of fold / unfold_transpose (strided adds, no dense Π) against the
dense "einsum" reference in float64 and torch's fold; NaN/inf propagation; bounded caches."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import contract
from tnconv.execute.col2im import col2im_plan

from .strategies import conv_cases, conv_transpose_cases


def _fold_network(case, channels):
    x_shape = (case.batch, channels, *case.input_size)
    unfold = tnconv.networks.unfold(x_shape, case.kernel_size, case.dilation, case.padding_tuple, case.stride)
    blocks = unfold.output_shape[2]
    return tnconv.networks.fold(
        (case.batch, channels * math.prod(case.kernel_size), blocks),
        case.input_size,
        case.kernel_size,
        case.dilation,
        case.padding_tuple,
        case.stride,
    )


@given(case=conv_cases(dims=st.integers(1, 4), max_size=6, allow_same=False))
def test_fold_matches_einsum(case):
    network = _fold_network(case, case.in_channels)
    assert col2im_plan(network) is not None
    u = torch.randn(network.input_shape("u"), dtype=torch.float64)
    expected = contract(network, {"u": u}, strategy="einsum")
    torch.testing.assert_close(contract(network, {"u": u}, strategy="col2im"), expected)
    torch.testing.assert_close(contract(network, {"u": u}), expected)


@given(case=conv_transpose_cases(dims=st.integers(1, 4), max_size=4))
def test_unfold_transpose_matches_einsum(case):
    x, _, _ = case.tensors()
    network = tnconv.networks.unfold_transpose(
        x.shape, case.kernel_size, case.stride, case.padding, case.output_padding, case.dilation
    )
    assert col2im_plan(network) is not None
    expected = contract(network, {"x": x}, strategy="einsum")
    torch.testing.assert_close(contract(network, {"x": x}, strategy="col2im"), expected)


@given(case=conv_cases(dims=st.just(2), max_size=7, allow_same=False))
def test_fold_matches_torch(case):
    network = _fold_network(case, case.in_channels)
    u = torch.randn(network.input_shape("u"), dtype=torch.float64)
    args = (case.kernel_size, case.dilation, case.padding_tuple, case.stride)
    torch.testing.assert_close(tnconv.fold(u, case.input_size, *args), F.fold(u, case.input_size, *args))


def _fold_loops(u, sizes, kernel, dilation, padding, stride):
    """fold by loops over blocks and taps (any D): only additions."""
    dims = len(sizes)
    outs = [
        (s + 2 * p - dl * (k - 1) - 1) // st + 1 for s, k, dl, p, st in zip(sizes, kernel, dilation, padding, stride)
    ]
    n, rows, _ = u.shape
    channels = rows // math.prod(kernel)
    blocks = u.reshape(n, channels, *kernel, *outs)
    result = torch.zeros(n, channels, *sizes, dtype=u.dtype)
    for k in itertools.product(*(range(t) for t in kernel)):
        for o in itertools.product(*(range(m) for m in outs)):
            i = [st * oo + dl * kk - p for oo, kk, dl, p, st in zip(o, k, dilation, padding, stride)]
            if all(0 <= ii < s for ii, s in zip(i, sizes)):
                result[(slice(None), slice(None), *i)] += blocks[(slice(None), slice(None), *k, *o)]
    assert dims == len(kernel)
    return result


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_fold_non_finite_like_torch(dims, value):
    size, kernel, dilation, padding, stride = (5 if dims < 4 else 4), 2, 1, 1, 2
    sizes, args = (size,) * dims, ((kernel,) * dims, (dilation,) * dims, (padding,) * dims, (stride,) * dims)
    blocks = math.prod((s + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for s in sizes)
    u = torch.randn(2, 3 * kernel**dims, blocks, dtype=torch.float64)
    u[1, 4, blocks // 2] = value
    u[0, 0, 0] = value  # a tap in the padding for the first block: reaches nothing
    ours = tnconv.fold(u, sizes, *args)
    if dims == 2:
        expected = F.fold(u, sizes, *args)
    elif dims == 1:
        expected = F.fold(u, (1, size), (1, kernel), (1, dilation), (0, padding), (1, stride)).squeeze(2)
    else:
        expected = _fold_loops(u, sizes, *args)
    assert torch.equal(ours.isnan(), expected.isnan())
    assert torch.equal(ours.isinf(), expected.isinf())
    torch.testing.assert_close(ours[expected.isfinite()], expected[expected.isfinite()])


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_unfold_transpose_non_finite_like_torch(dims):
    x = torch.randn(2, 3, *([4] * dims), dtype=torch.float64)
    x[(1, 2, *([1] * dims))] = float("nan")
    x[(0, 0, *([3] * dims))] = float("inf")
    kernel, stride, padding, output_padding = 3, 2, 1, 1
    ours = tnconv.unfold_transpose(x, kernel, stride, padding, output_padding)
    taps = kernel**dims
    weight = torch.eye(taps, dtype=x.dtype).reshape(1, taps, *([kernel] * dims)).repeat(3, *([1] * (dims + 1)))
    transpose = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]

    def placed(t):  # torch's transposed convolution with one-hot kernels: where each input lands
        return transpose(t, weight, None, stride, padding, output_padding, 3).flatten(2)

    finite = x.nan_to_num(0.0, 0.0, 0.0)
    torch.testing.assert_close(ours.nan_to_num(0.0, 0.0, 0.0), placed(finite))
    assert torch.equal(ours.isnan(), placed(x.isnan().to(x.dtype)) > 0)
    assert torch.equal(ours.isinf(), placed(x.isinf().to(x.dtype)) > 0)


def test_long_one_dimensional_folds_leave_bounded_caches():
    tnconv.clear_caches()
    for length in range(3000, 3040, 4):
        kernel = 16
        blocks = length - kernel + 1
        u = torch.randn(1, 2 * kernel, blocks)
        y = tnconv.fold(u, (length,), (kernel,))
        assert y.shape == (1, 2, length)
    cached_bytes = sum(info.nbytes for info in tnconv.cache_stats())
    assert cached_bytes < 2**20  # a dense Π per fold would be ~190 MB each
