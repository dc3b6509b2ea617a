"""Block sums of window axes (tnconv.execute.blocks) against the window-count matrix, and the
``"blocks+…"`` lowerings of KFAC-reduce's window sums in the plan, float64."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import contract, separable
from tnconv.execute.blocks import block_sums, combination_matrix, window_blocks
from tnconv.execute.separable import separable_plan, window_count_matrix
from tnconv.spec import IndexPattern
from tnconv.symbolic.builders.curvature import _square_base, input_patches, input_patches_transpose

CPU = torch.device("cpu")


@st.composite
def patterns(draw):
    kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    padding = draw(st.integers(0, 3))
    size = draw(st.integers(max(1, dilation * (kernel - 1) + 1 - 2 * padding), 14))
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return IndexPattern(size, outputs, kernel, stride, dilation, padding)


@given(pattern=patterns(), transposed=st.booleans(), axis=st.sampled_from([0, 1, 2]))
def test_block_sums_times_c_equal_the_window_count_matrix(pattern, transposed, axis):
    """``block_sums(x) ×_axis C`` equals ``x ×_axis M`` with ``M = Σ Π`` (stride phases, partial
    last rows, taps reading nothing, dilation and padding included)."""
    blocks = window_blocks(pattern, transposed)
    m = window_count_matrix(pattern, transposed, torch.float64, CPU)  # [I, K] (transposed: [O, K])
    shape = [2, 3, 4]
    shape[axis] = m.shape[0]
    x = torch.randn(shape, dtype=torch.float64)
    c = combination_matrix(blocks, torch.float64, CPU)
    assert c.shape == (blocks.rows, pattern.kernel_size)
    summed = block_sums(x, axis, blocks)
    assert summed.shape[axis] == blocks.rows
    ours = torch.tensordot(summed.movedim(axis, -1), c, 1).movedim(-1, axis)
    expected = torch.tensordot(x.movedim(axis, -1), m, 1).movedim(-1, axis)
    torch.testing.assert_close(ours, expected)
    assert blocks.rows <= 2 * pattern.kernel_size
    assert blocks.read <= m.shape[0]


@given(pattern=patterns(), transposed=st.booleans())
def test_positions_no_tap_reads_are_never_read(pattern, transposed):
    """NaN on every position no window reads (``M``'s zero rows) leaves the block sums finite;
    ``read`` counts exactly the positions the sums touch."""
    blocks = window_blocks(pattern, transposed)
    m = window_count_matrix(pattern, transposed, torch.float64, CPU)
    unread = m.sum(1) == 0
    x = torch.randn(3, m.shape[0], 2, dtype=torch.float64)
    x[:, unread] = float("nan")
    assert torch.isfinite(block_sums(x, 1, blocks)).all()
    marked = torch.zeros(m.shape[0], dtype=torch.float64, requires_grad=True)
    summed = block_sums(marked.view(1, -1, 1), 1, blocks).sum()
    touched = torch.autograd.grad(summed, marked, allow_unused=True)[0] if summed.requires_grad else None
    assert (0 if touched is None else int((touched != 0).sum())) == blocks.read == int((~unread).sum())


def test_block_geometry_of_common_layers():
    same = window_blocks(IndexPattern(112, 112, 3, 1, 1, 1), False)  # first row, middle, last row
    assert same.blocks == ((0, 0, 1), (0, 1, 111), (0, 111, 112)) and same.read == 112
    # stride 2, padding 1: tap 1 reads the even positions, taps 0 and 2 the odd ones (tap 0 all
    # but the last): three blocks, every position read once
    strided = window_blocks(IndexPattern(112, 56, 3, 2, 1, 1), False)
    assert strided.step == 2 and strided.blocks == ((0, 0, 56), (1, 0, 55), (1, 55, 56)) and strided.read == 112
    one_by_one = window_blocks(IndexPattern(14, 7, 1, 2, 1, 0), False)  # only even positions are read
    assert one_by_one.blocks == ((0, 0, 7),) and one_by_one.read == 7
    dilated = window_blocks(IndexPattern(3, 1, 2, 1, 2, 0), False)  # taps read positions 0 and 2 only
    assert dilated.blocks == ((0, 0, 1), (0, 2, 3)) and dilated.read == 2


def _plan(shape, kernel, **options):
    return separable_plan(_square_base(input_patches(shape, kernel, **options), "reduce")[0])


def every_axis_blocked(plan):
    """A fresh copy of ``plan`` whose ``"blocks+…"`` lowerings sum every axis with more axes
    after it in blocks (the run-length policy of the time model off), to test the mechanism on
    small maps."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(separable, "BLOCK_MIN_RUN", 2)
        patch.setattr(separable, "BLOCK_MAX_RUN", math.inf)
        fresh = dataclasses.replace(plan)
        fresh.blocked, fresh.blocks  # evaluated (and kept) under the policy off
    return fresh


def test_the_time_model_sums_large_maps_in_blocks_and_keeps_products_on_small_ones():
    large = _plan((1, 128, 112, 112), 3, padding=1)
    assert large.lowering.startswith("blocks+")
    read, runs, written, calls = large.block_counts()
    assert read == 128 * 112 * 112 and runs == 128 * 112 and calls == 3 and written == 128 * 3 * 112
    expected = large.counts()[large.lowering][0] * separable.MADD_SECONDS + (
        read * separable.BLOCK_READ_SECONDS
        + runs * separable.BLOCK_RUN_SECONDS
        + written * separable.BLOCK_WRITE_SECONDS
        + calls * separable.BLOCK_CALL_SECONDS
    )
    assert large.seconds(large.lowering) == expected
    assert large.seconds(large.lowering) < min(large.seconds("kron"), large.seconds("axes"))
    small = _plan((64, 512, 7, 7), 3, padding=1)  # 7-element rows: no block sums
    assert small.lowering == "kron" and small.blocked == () and "blocks+kron" not in small.counts()
    assert _plan((4, 3, 20), 3).blocked == ()  # 1-d: the only window axis is the contiguous one
    # 3-d: the outer axis is followed by 64·64 elements (torch's sum over it is slow there), the
    # middle one by 64
    deep = _plan((2, 8, 10, 64, 64), 3, padding=1)
    assert [s.axis for s in deep.blocked] == [4]


@given(
    size=st.integers(5, 40),
    kernel=st.integers(2, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
)
def test_factor_through_block_sums_equals_the_unfold_recipe(size, kernel, stride, padding, groups, bias):
    """Whatever lowering the plan picks on these maps, KFAC-reduce's factor is torch's unfold
    recipe; and the ``"blocks+kron"`` lowering itself gives the same ū."""
    x = torch.randn(2, 2 * groups, size, size + 1, dtype=torch.float64)
    if size + 2 * padding < kernel:
        return
    factor = tnconv.kfac_reduce_factor(x, kernel, stride=stride, padding=padding, groups=groups, bias=bias)
    u = torch.nn.functional.unfold(x, kernel, padding=padding, stride=stride).mean(-1).view(2, groups, -1)
    if bias:
        u = torch.cat([u, torch.ones(2, groups, 1, dtype=x.dtype)], -1)
    expected = torch.einsum("ngi,ngj->gij", u, u) / 2
    torch.testing.assert_close(factor, expected)
    plan = every_axis_blocked(_plan(x.shape, kernel, stride=stride, padding=padding, groups=groups))
    assert plan.blocked
    for lowering in ("blocks+kron", "blocks+axes"):
        t = separable.reduce_windows(x.reshape(plan.x_shape), plan, lowering)
        ours = t.permute(plan.order).reshape(plan.output_shape)
        windows = math.prod((s + 2 * padding - kernel) // stride + 1 for s in (size, size + 1))
        torch.testing.assert_close(
            ours.reshape(2, groups, -1)[..., : u.shape[-1] - bias], u[..., : u.shape[-1] - bias] * windows
        )


def test_explain_names_the_block_sums():
    text = str(tnconv.explain(tnconv.networks.kfac_reduce((1, 64, 112, 112), 3, stride=2, padding=1)))
    assert "3 block sums (views of step 2)" in text and "(C_1 ⊗ M_2)" in text


def test_non_finite_inputs_reach_only_their_windows_through_block_sums():
    """A NaN and an inf inside a map large enough for the block lowering: the factor is
    non-finite exactly where torch's unfold recipe is (the block sums themselves propagate
    them; ``C``'s zeros would spread them, so the plan's exact fallback runs)."""
    x = torch.randn(1, 64, 112, 112, dtype=torch.float64)
    plan = _plan(x.shape, 3, stride=2, padding=1)
    assert plan.lowering.startswith("blocks+")
    x[0, 5, 40, 41] = float("nan")
    x[0, 9, 0, 111] = float("inf")
    x[0, 12, 111, 111] = float("nan")  # the corner, read by the last tap of the last window only
    factor = tnconv.kfac_reduce_factor(x, 3, stride=2, padding=1)
    u = torch.nn.functional.unfold(x, 3, padding=1, stride=2).mean(-1)
    reference = u.T @ u
    assert torch.equal(factor[0].isnan(), reference.isnan())
    assert torch.equal(factor[0].isinf(), reference.isinf())
    finite = reference.isfinite()
    torch.testing.assert_close(factor[0][finite], reference[finite])


def test_an_unknown_lowering_is_a_value_error_naming_it():
    plan = _plan((2, 3, 8, 8), 3, padding=1)
    with pytest.raises(ValueError, match="'fast'"):
        separable.reduce_windows(torch.randn(plan.x_shape), plan, "fast")


@pytest.mark.parametrize(
    "builder, shape, options",
    [
        (input_patches, (1, 48, 64, 64), {"kernel_size": 3, "stride": 2, "padding": 3, "dilation": 2}),
        (input_patches, (1, 48, 60, 64), {"kernel_size": (5, 3), "stride": (3, 1), "padding": (1, 0)}),
        (
            input_patches_transpose,
            (1, 48, 56, 56),
            {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        ),
    ],
)
def test_blocked_plans_of_real_sizes_match_the_dense_reference(builder, shape, options):
    """Maps wide enough for the plan's own rule to pick block sums (no policy switched off),
    with dilation, asymmetric kernels and strides, and a transposed convolution's unfold."""
    patches = builder(shape, **options)
    base, _ = _square_base(patches, "reduce")
    plan = separable_plan(base)
    assert plan.blocked
    x = torch.randn(shape, dtype=torch.float64)
    expected = contract(base, {"x": x}, strategy="einsum")
    for lowering in ("blocks+kron", "blocks+axes"):
        t = separable.reduce_windows(x.reshape(plan.x_shape), plan, lowering)
        torch.testing.assert_close(t.permute(plan.order).reshape(plan.output_shape), expected)
    torch.testing.assert_close(contract(base, {"x": x}), expected)


def test_gradients_through_the_block_lowering_match_the_unfold_recipe():
    """Block sums are differentiable (``sum`` over views and ``stack``): the factor's VJP
    with respect to ``x`` equals the unfold recipe's, and ``vmap`` gives the per-example factors."""
    x = torch.randn(1, 64, 112, 112, dtype=torch.float64, requires_grad=True)
    assert _plan(x.shape, 3, stride=2, padding=1).lowering.startswith("blocks+")
    factor = tnconv.kfac_reduce_factor(x, 3, stride=2, padding=1)
    cotangent = torch.randn_like(factor)
    (ours,) = torch.autograd.grad((factor * cotangent).sum(), x)
    u = torch.nn.functional.unfold(x, 3, padding=1, stride=2).mean(-1)
    (expected,) = torch.autograd.grad((u.T @ u * cotangent[0]).sum(), x)
    torch.testing.assert_close(ours, expected)
    stack = torch.stack([x.detach(), 2 * x.detach()])
    batched = torch.func.vmap(lambda xs: tnconv.kfac_reduce_factor(xs, 3, stride=2, padding=1))(stack)
    torch.testing.assert_close(batched[1], 4 * factor.detach())
