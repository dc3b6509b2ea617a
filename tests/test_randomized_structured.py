"""The structured spatial estimators (tiles of rows, rows of one dimension) computed exactly.

With every unit kept (and scale 1) an estimator must equal the exact VJP, whatever the
layout of its units: this checks the slab, window and padding arithmetic of
:mod:`tnconv.randomized.tiles` and :mod:`tnconv.randomized.rows` deterministically
(the statistical tests of tests/test_randomized.py check the sampling and the rescaling),
against torch's autograd VJPs (float64).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.randomized import estimators, rows, tiles
from tnconv.randomized.sampling import Draw, fixed_count

from .strategies import conv_cases

TORCH_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


def exact_vjps(x, w, v, kwargs):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = TORCH_CONV[x.dim() - 2](x, w, None, **kwargs)
    return torch.autograd.grad(y, (x, w), v)


def case_setup(case):
    x, w, _ = case.tensors()
    y = TORCH_CONV[case.dims](x, w, None, case.stride, case.padding, case.dilation, case.groups)
    v = torch.randn_like(y)
    geometry = estimators._geometry(tuple(w.shape[2:]), case.stride, case.padding, case.dilation, case.groups)
    return x, w, v, geometry


@settings(deadline=None)
@given(case=conv_cases(dims=st.integers(1, 3), max_size=7), tiles_wanted=st.integers(1, 4), data=st.data())
def test_tiles_with_every_unit_kept_are_exact(case, tiles_wanted, data):
    """Any number of balanced tiles (interior, padded and asymmetric edge slabs alike)."""
    x, w, v, geometry = case_setup(case)
    layout = tiles.TileLayout(v.shape[2], min(tiles_wanted, v.shape[2]))
    everything = Draw(tuple(range(x.shape[0] * layout.tiles)), 1.0)
    grad_x, grad_w = exact_vjps(x, w, v, case.kwargs())
    got_w = tiles.tile_weight_vjp(x, v, tuple(w.shape), geometry, layout, everything)
    torch.testing.assert_close(got_w, grad_w, rtol=1e-10, atol=1e-10)
    got_x = tiles.tile_input_vjp(w, v, tuple(x.shape), geometry, layout, everything)
    torch.testing.assert_close(got_x, grad_x, rtol=1e-10, atol=1e-10)
    # a draw of some units is the exact VJP of v masked to those units
    kept = sorted(data.draw(st.sets(st.integers(0, len(everything.indices) - 1), min_size=1)))
    mask = torch.zeros(layout.tiles, x.shape[0], dtype=v.dtype)
    mask.view(-1)[kept] = 1.0
    row_mask = mask[torch.tensor(layout.row_tiles())].t()  # [N, O_1]
    masked = v * row_mask.reshape(v.shape[0], 1, v.shape[2], *([1] * (v.dim() - 3)))
    grad_x, grad_w = exact_vjps(x, w, masked, case.kwargs())
    draw = Draw(tuple(kept), 1.0)
    torch.testing.assert_close(tiles.tile_weight_vjp(x, v, tuple(w.shape), geometry, layout, draw), grad_w,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tiles.tile_input_vjp(w, v, tuple(x.shape), geometry, layout, draw), grad_x,
                               rtol=1e-10, atol=1e-10)


@settings(deadline=None)
@given(case=conv_cases(dims=st.integers(1, 3), max_size=7), data=st.data())
def test_rows_of_one_dimension_are_exact(case, data):
    """The row estimators (``leg="spatial:d"``) over a subset of rows equal the exact VJP of
    ``v`` masked to those rows; over every row, the exact VJP."""
    x, w, v, geometry = case_setup(case)
    dim = data.draw(st.integers(0, case.dims - 1))
    size = v.shape[2 + dim]
    kept = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    shape = [1] * v.dim()
    shape[2 + dim] = size
    mask = torch.zeros(size, dtype=v.dtype)
    mask[kept] = 1.0
    grad_x, grad_w = exact_vjps(x, w, v * mask.view(shape), case.kwargs())
    draw = Draw(tuple(kept), 1.0)
    got_w = rows.row_weight_vjp(x, v, tuple(w.shape), geometry, dim, draw)
    torch.testing.assert_close(got_w, grad_w, rtol=1e-10, atol=1e-10)
    got_x = rows.row_input_vjp(w, v, tuple(x.shape), geometry, dim, draw)
    torch.testing.assert_close(got_x, grad_x, rtol=1e-10, atol=1e-10)


def test_rows_in_four_dimensions_use_the_tnconv_network():
    """``D = 4`` (no torch kernel): rows of the second dimension, every row kept."""
    import tnconv

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 5, 6, 3, 3, dtype=torch.float64, generator=gen)
    w = torch.randn(3, 2, 2, 3, 1, 2, dtype=torch.float64, generator=gen)
    kwargs = dict(stride=(1, 2, 1, 1), padding=(0, 1, 0, 1), dilation=1, groups=1)
    v = torch.randn(tnconv.conv(x, w, None, **kwargs).shape, dtype=torch.float64, generator=gen)
    geometry = estimators._geometry(tuple(w.shape[2:]), kwargs["stride"], kwargs["padding"], 1, 1)
    everything = Draw(tuple(range(v.shape[3])), 1.0)
    exact_w = estimators.conv_weight_vjp(x, v, w.shape[2:], **kwargs, keep=1.0)
    exact_x = estimators.conv_input_vjp(w, v, x.shape, **kwargs, keep=1.0)
    got_w = rows.row_weight_vjp(x, v, tuple(w.shape), geometry, 1, everything)
    torch.testing.assert_close(got_w, exact_w, rtol=1e-10, atol=1e-10)
    got_x = rows.row_input_vjp(w, v, tuple(x.shape), geometry, 1, everything)
    torch.testing.assert_close(got_x, exact_x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "rows_out, kernel, stride, batch, keep, expected",
    [
        (14, 3, 1, 64, 0.5, 1),  # ceil(32)/64 = 0.5: the units are the samples
        (32, 3, 1, 10, 0.5, 1),  # 5 of 10
        (32, 3, 1, 10, 0.25, 2),  # 3 of 10 = 0.3 > 1.125·0.25; 5 of 20
        (32, 3, 1, 3, 0.4, 3),  # 2 of 3, 3 of 6, then 4 of 9 = 0.44 <= 1.125·0.4
        (32, 3, 1, 2, 0.4, 4),  # 1 of 2, 2 of 4, 3 of 6: never close, so MAX_TILES
        (14, 3, 1, 1, 0.5, 1),  # halo 2 needs tiles of >= 8 rows: only one fits
        (14, 1, 1, 1, 0.25, 4),  # 1×1: no halo, tiles of any height
        (28, 3, 2, 1, 0.5, 2),  # stride 2 halves the halo's share
    ],
)
def test_cost_model_tiles(rows_out, kernel, stride, batch, keep, expected):
    layout = tiles.tile_layout(rows_out, kernel, stride, 1, batch=batch, keep=keep)
    assert layout.tiles == expected
    halo = kernel - 1
    for t in range(layout.tiles):
        start, stop = layout.bounds(t)
        assert stop > start and (layout.tiles == 1 or halo <= tiles.HALO_FRACTION * stride * (stop - start))
    assert sum(stop - start for start, stop in map(layout.bounds, range(layout.tiles))) == rows_out
    units = batch * layout.tiles
    close = fixed_count(units, keep) <= (1 + tiles.KEEP_DRIFT) * keep * units
    fewer = [batch * t for t in range(1, layout.tiles)]
    # the smallest T that keeps close to `keep`, or as many tiles as the bounds allow
    assert not any(fixed_count(u, keep) <= (1 + tiles.KEEP_DRIFT) * keep * u for u in fewer)
    most = min(tiles.MAX_TILES, rows_out // math.ceil(halo / (tiles.HALO_FRACTION * stride)) if halo else rows_out)
    assert close or layout.tiles == most


def test_cost_model_keeps_enough_work_per_kernel_call():
    """A small layer (48 MFLOPs, the size of the sub-millisecond 1-d ``m5_audio/3``) keeps
    one kernel call where tiles would make calls of a few samples each; a large one gets
    its tiles."""
    small = 2 * 64 * 122 * 32 * 32 * 3
    assert tiles.tile_layout(122, 3, 1, 1, batch=10, keep=0.25).tiles == 2
    assert tiles.tile_layout(122, 3, 1, 1, batch=10, keep=0.25, flops=small).tiles == 1
    large = 2 * 1 * 112 * 112 * 64 * 64 * 9
    assert tiles.tile_layout(112, 3, 1, 1, batch=1, keep=0.25, flops=large).tiles == 4
    geometry = estimators._geometry((3,), 1, 0, 1, 1)
    assert geometry.layout((10, 32, 122), (32, 32, 3), 0.25).tiles == 1


@settings(deadline=None, max_examples=30)
@given(case=conv_cases(dims=st.integers(1, 3), max_size=7), data=st.data())
def test_draws_cut_into_many_kernel_calls_are_unchanged(case, data):
    """With a call budget of one byte every kept sample is its own kernel call; the VJPs are
    sums over samples, so the result equals the masked exact VJP (weight and input)."""
    x, w, v, geometry = case_setup(case)
    layout = tiles.TileLayout(v.shape[2], min(2, v.shape[2]))
    units = x.shape[0] * layout.tiles
    kept = sorted(data.draw(st.sets(st.integers(0, units - 1), min_size=1)))
    mask = torch.zeros(layout.tiles, x.shape[0], dtype=v.dtype)
    mask.view(-1)[kept] = 1.0
    row_mask = mask[torch.tensor(layout.row_tiles())].t()
    masked = v * row_mask.reshape(v.shape[0], 1, v.shape[2], *([1] * (v.dim() - 3)))
    grad_x, grad_w = exact_vjps(x, w, masked, case.kwargs())
    draw = Draw(tuple(kept), 1.0)
    budget = tiles.CALL_BYTES
    try:
        tiles.CALL_BYTES = 1
        got_w = tiles.tile_weight_vjp(x, v, tuple(w.shape), geometry, layout, draw)
        got_x = tiles.tile_input_vjp(w, v, tuple(x.shape), geometry, layout, draw)
    finally:
        tiles.CALL_BYTES = budget
    torch.testing.assert_close(got_w, grad_w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_x, grad_x, rtol=1e-10, atol=1e-10)


@given(samples=st.integers(1, 200), sample_bytes=st.floats(1, 1e8), weight_bytes=st.floats(0, 1e8))
def test_call_count_bounds(samples, sample_bytes, weight_bytes):
    count = tiles.call_count(samples, sample_bytes, weight_bytes)
    assert 1 <= count <= samples
    budget = max(tiles.CALL_BYTES, tiles.WEIGHT_CALLS * weight_bytes)
    if count < samples:  # calls are no more than ~1.5 budgets, unless one sample exceeds it
        assert samples * sample_bytes / count <= 2 * budget
    if samples * sample_bytes <= budget / 2:
        assert count == 1


def test_call_budget_splits_a_memory_bound_draw_but_not_a_large_weight():
    # depthwise-like: big activations, tiny weight → several calls; VGG-like weight → one
    assert tiles.call_count(27, 6e5, 1e3) > 1
    assert tiles.call_count(20, 6e5, 9.4e6) == 1
    calls = tiles._calls(list(range(8)), tiles.CALL_BYTES / 2, 0)
    assert [s for c in calls for s in c] == list(range(8)) and len(calls) == 4
