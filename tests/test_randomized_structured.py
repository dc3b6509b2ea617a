"""The structured spatial estimators (tiles of rows, rows of one dimension) computed exactly.

With every unit kept (and scale 1) an estimator must equal the exact VJP, whatever the
layout of its units: this checks the slab, window and padding arithmetic of
:mod:`tnconv.randomized.tiles` and :mod:`tnconv.randomized.rows` deterministically
(the statistical tests of tests/test_randomized.py check the sampling and the rescaling),
against torch's autograd VJPs (float64).
"""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.randomized import estimators, rows, sampling, tiles
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
    torch.testing.assert_close(
        tiles.tile_weight_vjp(x, v, tuple(w.shape), geometry, layout, draw), grad_w, rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(
        tiles.tile_input_vjp(w, v, tuple(x.shape), geometry, layout, draw), grad_x, rtol=1e-10, atol=1e-10
    )


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
        (32, 3, 1, 10, 0.25, 2),  # 3 of 10 = 0.3; 5 of 20
        (32, 3, 1, 3, 0.4, 4),  # 2 of 3, 3 of 6, 4 of 9, then 5 of 12 = 0.42
        (32, 3, 1, 2, 0.4, 1),  # 1 of 2, 2 of 4, 3 of 6, 4 of 8: no tile count keeps less
        (14, 3, 1, 1, 0.5, 1),  # halo 2 needs tiles of >= 8 rows: only one fits
        (14, 1, 1, 1, 0.25, 4),  # 1×1: no halo, tiles of any height
        (28, 3, 2, 1, 0.5, 2),  # stride 2 halves the halo's share
    ],
)
def test_cost_model_tiles_without_a_cost(rows_out, kernel, stride, batch, keep, expected):
    """Without FLOPs (unbounded work) the model takes the fewest tiles with the smallest kept
    fraction ``ceil(keep·N·T)/(N·T)``, within its bounds (tile height, MAX_TILES)."""
    layout = tiles.tile_layout(rows_out, kernel, stride, 1, batch=batch, keep=keep)
    assert layout.tiles == expected
    halo = kernel - 1
    for t in range(layout.tiles):
        start, stop = layout.bounds(t)
        assert stop > start and (layout.tiles == 1 or halo <= tiles.HALO_FRACTION * stride * (stop - start))
    assert sum(stop - start for start, stop in map(layout.bounds, range(layout.tiles))) == rows_out
    most = min(tiles.MAX_TILES, rows_out // math.ceil(halo / (tiles.HALO_FRACTION * stride)) if halo else rows_out)
    fractions = {t: fixed_count(batch * t, keep) / (batch * t) for t in range(1, most + 1)}
    assert fractions[layout.tiles] == min(fractions.values())
    assert all(fractions[t] > fractions[layout.tiles] for t in range(1, layout.tiles))


def test_cost_model_prices_calls_and_bytes():
    """The model estimates a draw's time from its calls, FLOPs and bytes (a roofline sum): a
    small compute-bound layer keeps one tile per sample (an extra call costs more than the
    work it saves), a byte-bound one of the same FLOPs gets its tiles."""
    small = 2 * 10 * 122 * 32 * 32 * 3  # the 1-d m5_audio/3 at N = 10: 7.5 MFLOPs, 0.3 MB
    assert tiles.tile_layout(122, 3, 1, 1, batch=10, keep=0.25).tiles == 2  # (work unbounded)
    assert tiles.tile_layout(122, 3, 1, 1, batch=10, keep=0.25, flops=small, x_bytes=2e5, v_bytes=2e5).tiles == 1
    assert tiles.tile_layout(122, 3, 1, 1, batch=10, keep=0.25, flops=small, x_bytes=2e7, v_bytes=2e7).tiles == 2
    geometry = estimators._geometry((3,), 1, 1, 1, 1)
    assert geometry.layout((10, 32, 122), (10, 32, 122), (32, 32, 3), 0.25).tiles == 1
    # resnet18/layer4.0.downsample.0 (1×1, stride 2, N = 41): two tiles would keep 0.5 of the
    # work instead of 21/41 = 0.512, a gain inside TILE_MARGIN; measured 1.24× the exact VJP
    # with them at keep 0.5, 0.68 without
    downsample = dict(flops=2 * 41 * 7 * 7 * 512 * 256, x_bytes=4 * 41 * 256 * 14 * 14, v_bytes=4 * 41 * 512 * 7 * 7)
    assert tiles.tile_layout(7, 1, 2, 1, batch=41, keep=0.5, **downsample).tiles == 1
    seconds = [tiles.layout_seconds(7, t, 0, 2, batch=41, keep=0.5, **downsample) for t in (1, 2)]
    assert seconds[1] < seconds[0] <= (1 + tiles.TILE_MARGIN) * seconds[1]
    # the estimate is what it says: calls, then the kept fraction of FLOPs and bytes (halos included)
    seconds = tiles.layout_seconds(122, 2, 2, 1, batch=10, keep=0.25, flops=small, x_bytes=2e5, v_bytes=1e5)
    streamed = 2e5 * (122 + 2 * 2) / (122 + 2) + 1e5
    calls = 2 * (1 - math.comb(10, 5) / math.comb(20, 5))  # a tile is empty when none of its 10 units is drawn
    assert seconds == pytest.approx(
        calls * tiles.CALL_SECONDS + 0.25 * (small / tiles.FLOP_RATE + streamed / tiles.BYTE_RATE), rel=1e-12
    )


@pytest.mark.parametrize("batch, tiles_, keep", [(1, 2, 0.5), (3, 4, 0.25), (5, 3, 0.1), (2, 1, 0.7)])
def test_bernoulli_expected_calls_and_kept_fraction_by_enumeration(batch, tiles_, keep):
    """A Bernoulli draw over the ``N·T`` units (tile-major): the expected number of tiles with
    a kept unit and the expected kept fraction, summed over every subset with its probability."""
    count = batch * tiles_
    calls = kept = 0.0
    for subset in itertools.product((False, True), repeat=count):
        p = math.prod(keep if k else 1 - keep for k in subset)
        calls += p * sum(any(subset[t * batch : (t + 1) * batch]) for t in range(tiles_))
        kept += p * sum(subset) / count
    assert tiles.expected_calls(batch, tiles_, keep, "bernoulli") == pytest.approx(calls, rel=1e-12)
    assert tiles.kept_fraction(count, keep, "bernoulli") == pytest.approx(kept, rel=1e-12)


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_bernoulli_draws_keep_one_tile_per_sample(keep):
    """Tiles buy a fixed-size draw a kept fraction nearer ``keep``; a Bernoulli draw keeps
    ``keep`` of the work in expectation with any number of tiles, so the model gives it one
    tile per sample (more would add halos and calls) — where fixed draws of the same layer
    (``mobilenet_v2/features.2.conv.1.0`` at ``N = 1``) get 2–4 — and its plan's expected
    FLOPs are ``keep`` of the exact VJP's."""
    geometry = estimators._geometry((3, 3), 2, 1, 1, 96)
    shapes = (1, 96, 112, 112), (1, 96, 56, 56), (96, 1, 3, 3)
    assert geometry.layout(*shapes, keep).tiles >= 2
    assert geometry.layout(*shapes, keep, mode="bernoulli").tiles == 1
    plan = tiles.tile_plan(*shapes, geometry, keep, mode="bernoulli")
    assert plan.flops / tiles.tile_plan(*shapes, geometry, 1.0).flops == pytest.approx(keep, rel=1e-12)
    for t in (1, 2, 3):  # the estimate grows with the tiles
        args = dict(batch=1, keep=keep, flops=5.4e6, x_bytes=4.8e6, v_bytes=1.2e6, mode="bernoulli")
        assert tiles.layout_seconds(56, t, 2, 2, **args) < tiles.layout_seconds(56, t + 1, 2, 2, **args)


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_single_sample_memory_bound_layer_gets_tiles(keep):
    """``mobilenet_v2/features.2.conv.1.0`` at the benchmark's ``N = 1``: depthwise 3×3,
    stride 2, 96 channels of 112×112 (5.4 MFLOPs, but 6 MB of ``x`` and ``v``). With one tile
    a fixed-size draw of its one unit keeps everything; the model cuts it into tiles so that
    the plan's work is about ``keep`` of the exact VJP's (at most ``1/MAX_TILES`` of it)."""
    geometry = estimators._geometry((3, 3), 2, 1, 1, 96)
    x_shape, v_shape, weight_shape = (1, 96, 112, 112), (1, 96, 56, 56), (96, 1, 3, 3)
    layout = geometry.layout(x_shape, v_shape, weight_shape, keep)
    assert layout.tiles >= 2
    plan, full = (tiles.tile_plan(x_shape, v_shape, weight_shape, geometry, k) for k in (keep, 1.0))
    assert plan.units == layout.tiles
    assert plan.flops / full.flops == pytest.approx(max(keep, 1 / tiles.MAX_TILES), abs=0.01)
    assert plan.gathered / full.gathered <= max(keep, 1 / tiles.MAX_TILES) * (1 + tiles.HALO_FRACTION)
    # the draws are exact where they should be: every unit kept, and each unit alone; in
    # float32 too, where the slabs (row views of one sample) go to oneDNN's kernel
    gen = torch.Generator().manual_seed(0)
    kwargs = dict(stride=2, padding=1, groups=96)
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        x = torch.randn(x_shape, dtype=dtype, generator=gen)
        v = torch.randn(v_shape, dtype=dtype, generator=gen)
        everything = Draw(tuple(range(layout.tiles)), 1.0)
        exact = torch.nn.grad.conv2d_weight(x.double(), weight_shape, v.double(), **kwargs)
        got = tiles.tile_weight_vjp(x, v, weight_shape, geometry, layout, everything)
        torch.testing.assert_close(got.double(), exact, rtol=tolerance, atol=tolerance)
        for tile in range(layout.tiles):
            mask = torch.zeros(v_shape[2], dtype=torch.float64)
            mask[slice(*layout.bounds(tile))] = 1.0
            masked = torch.nn.grad.conv2d_weight(x.double(), weight_shape, v.double() * mask.view(-1, 1), **kwargs)
            got = tiles.tile_weight_vjp(x, v, weight_shape, geometry, layout, Draw((tile,), 1.0))
            torch.testing.assert_close(got.double(), masked, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "x_shape, v_shape, kernel, kwargs",
    [
        ((8, 16, 32, 32), (8, 32, 32, 32), (3, 3), dict(padding=1)),
        ((4, 32, 28, 28), (4, 32, 14, 14), (3, 3), dict(stride=2, padding=1, groups=32)),
        ((4, 8, 200), (4, 8, 200), (5,), dict(padding=2)),
        ((1, 96, 112, 112), (1, 96, 56, 56), (3, 3), dict(stride=2, padding=1, groups=96)),
    ],
)
def test_cost_model_more_tiles_at_smaller_keep(x_shape, v_shape, kernel, kwargs):
    geometry = estimators._geometry(kernel, kwargs.get("stride", 1), kwargs["padding"], 1, kwargs.get("groups", 1))
    weight_shape = (v_shape[1], x_shape[1] // kwargs.get("groups", 1), *kernel)
    counts = [geometry.layout(x_shape, v_shape, weight_shape, keep).tiles for keep in (0.5, 0.25, 0.1)]
    assert counts == sorted(counts)


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


def test_cost_model_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of .* got 'Bernoulli'"):
        tiles.tile_layout(32, 3, 1, 1, batch=1, keep=0.5, flops=1e6, mode="Bernoulli")
    with pytest.raises(ValueError, match="mode must be one of"):
        tiles.layout_seconds(32, 1, 2, 1, batch=1, keep=0.5, flops=1e6, x_bytes=1e5, v_bytes=1e5, mode="exact")


@pytest.mark.parametrize("size", [1, 7, 64, sampling.KEEP_IN_PYTHON, sampling.KEEP_IN_PYTHON + 1, 5000])
@pytest.mark.parametrize("keep", [0.05, 0.5, 1 - 1e-9])
def test_bernoulli_draw_keeps_the_values_below_keep(size, keep):
    """Small CPU draws keep their values in Python, larger ones with ``nonzero``: either way
    the kept values are exactly those whose uniform number is below ``keep`` (so a seed gives
    the same draw as before and on every path)."""
    for seed in range(3):
        uniform = torch.rand(size, generator=torch.Generator().manual_seed(seed))
        expected = tuple(i for i in range(size) if uniform[i].item() < keep)
        draw = sampling.sample(size, keep, "bernoulli", torch.Generator().manual_seed(seed))
        if not expected:
            assert draw is None
            continue
        assert draw.indices == expected and draw.scale == 1 / keep
        assert draw.index(torch.device("cpu")).tolist() == list(expected)
