"""``tnconv.kfac_reduce_root``: ``Rᵀ R`` is the KFAC-reduce factor (float64, any D, groups,
bias, stride, dilation, padding, transposed)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tnconv


@st.composite
def layers(draw):
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = tuple(draw(st.integers(max(1, r - 2 * p), r + 4)) for r, p in zip(reach, padding))
    batch = draw(st.integers(1, 3))
    return (batch, channels, *size), kernel, stride, padding, dilation, groups, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(layer=layers(), seed=st.integers(0, 2**16))
def test_the_roots_gram_is_the_kfac_reduce_factor(layer, seed):
    shape, kernel, stride, padding, dilation, groups, bias = layer
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    args = (kernel, stride, padding, dilation, groups)
    root = tnconv.kfac_reduce_root(x, *args, bias=bias)
    d = shape[1] // groups * math.prod(kernel) + bias
    assert root.shape == (groups, shape[0], d)
    torch.testing.assert_close(root.transpose(1, 2) @ root, tnconv.kfac_reduce_factor(x, *args, bias=bias))


@settings(max_examples=40, deadline=None)
@given(layer=layers(), output_padding=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_the_transposed_roots_gram_is_the_transposed_factor(layer, output_padding, seed):
    shape, kernel, stride, padding, dilation, groups, bias = layer
    output_padding = tuple(min(output_padding, max(s, d) - 1) for s, d in zip(stride, dilation))
    sizes = [
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        for i, s, p, d, k, op in zip(shape[2:], stride, padding, dilation, kernel, output_padding)
    ]
    assume(min(sizes) > 0)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    args = (kernel, stride, padding, output_padding, dilation, groups)
    root = tnconv.kfac_reduce_root_transpose(x, *args, bias=bias)
    expected = tnconv.kfac_reduce_factor_transpose(x, *args, bias=bias)
    torch.testing.assert_close(root.transpose(1, 2) @ root, expected)


def test_the_root_is_the_mean_unfolded_input_over_root_n():
    # independent of the engine: torch's unfold, averaged over positions, divided by √N
    x = torch.randn(5, 4, 9, 7, dtype=torch.float64)
    u = torch.nn.functional.unfold(x, 3, dilation=2, padding=1, stride=2)  # [N, C·9, O]
    expected = (u.mean(2) / math.sqrt(5)).view(5, 2, 18).transpose(0, 1)
    root = tnconv.kfac_reduce_root(x, 3, stride=2, padding=1, dilation=2, groups=2, bias=True)
    torch.testing.assert_close(root[:, :, :18], expected)
    torch.testing.assert_close(root[:, :, 18], torch.full((2, 5), 1 / math.sqrt(5), dtype=torch.float64))


def test_gradients_flow_through_the_root():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tnconv.kfac_reduce_root(t, 3, padding=1, bias=True), (x,))


def test_an_empty_batch_gives_a_nan_factor_as_kfac_reduce_factor():
    x = torch.randn(0, 2, 5, 5)
    root = tnconv.kfac_reduce_root(x, 3)
    assert torch.isnan(root.transpose(1, 2) @ root).all()
    assert torch.isnan(tnconv.kfac_reduce_factor(x, 3)).all()


def test_non_finite_inputs_reach_the_same_entries_as_the_factor():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    x[1, 0, 0, 0] = math.nan
    root = tnconv.kfac_reduce_root(x, 3, padding=1)
    # sample 1's window sums of channel 0 read the NaN; every other sample stays finite
    assert torch.isnan(root[0, 1, :9]).any() and torch.isfinite(root[:, [0, 2]]).all()
    gram = root.transpose(1, 2) @ root
    torch.testing.assert_close(torch.isfinite(gram), torch.isfinite(tnconv.kfac_reduce_factor(x, 3, padding=1)))


@pytest.mark.parametrize(
    ("arguments", "error"),
    [((torch.randn(2, 3),), ValueError), (([1.0],), TypeError), ((torch.ones(1, 2, 4, dtype=torch.int64),), TypeError)],
)
def test_bad_input_names_x(arguments, error):
    with pytest.raises(error, match="x"):
        tnconv.kfac_reduce_root(*arguments, 3)
