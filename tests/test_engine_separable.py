"""The "separable" lowering (window sums as small matrices on x's axes) against the dense
"einsum" reference in float64, and its NaN/inf propagation against torch's unfold."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import contract, separable
from tnconv.execute.separable import kron_count_matrix, reduce_windows, separable_plan, window_count_matrix
from tnconv.spec import IndexPattern
from tnconv.symbolic.builders.curvature import _square_base, feature_sum_network, input_patches, input_patches_transpose

from .strategies import conv_cases, conv_transpose_cases
from .test_engine_blocks import every_axis_blocked


def _reduce_networks(patches):
    base, _ = _square_base(patches, "reduce")
    return base, feature_sum_network(patches)


@given(case=conv_cases(dims=st.integers(1, 4), max_size=6))
def test_window_sums_match_einsum(case):
    x, _, _ = case.tensors()
    patches = input_patches(x.shape, case.kernel_size, case.stride, case.padding, case.dilation, case.groups)
    for network in _reduce_networks(patches):
        assert separable_plan(network) is not None
        expected = contract(network, {"x": x}, strategy="einsum")
        torch.testing.assert_close(contract(network, {"x": x}, strategy="separable"), expected)
        torch.testing.assert_close(contract(network, {"x": x}), expected)


@given(case=conv_transpose_cases(dims=st.integers(1, 4), max_size=4))
def test_window_sums_match_einsum_transposed(case):
    x, _, _ = case.tensors()
    patches = input_patches_transpose(
        x.shape, case.kernel_size, case.stride, case.padding, case.output_padding, case.dilation, case.groups
    )
    for network in _reduce_networks(patches):
        expected = contract(network, {"x": x}, strategy="einsum")
        torch.testing.assert_close(contract(network, {"x": x}, strategy="separable"), expected)


@given(case=conv_cases(dims=st.integers(1, 3), max_size=6))
def test_kfac_reduce_factor_matches_einsum(case):
    x, _, _ = case.tensors()
    network = tnconv.networks.kfac_reduce(x.shape, case.kernel_size, **case.kwargs())
    expected = contract(network, {"x": x}, strategy="einsum")
    torch.testing.assert_close(contract(network, {"x": x}), expected)
    factor = tnconv.kfac_reduce_factor(x, case.kernel_size, **case.kwargs(), bias=True)
    torch.testing.assert_close(factor[:, :-1, :-1], expected)


def _check_every_lowering(x, patches):
    """Every lowering of step 2 ("kron": one GEMM with M_1 ⊗ … ⊗ M_D; "axes": per-axis
    products on views; either after block sums), whichever the plan would choose, against
    the dense reference."""
    for network in _reduce_networks(patches):
        plan = every_axis_blocked(separable_plan(network))  # the block lowerings on small maps too
        expected = contract(network, {"x": x}, strategy="einsum")
        lowerings = plan.counts() if plan.rest else {"sum": None}
        assert not plan.rest or ("kron" in lowerings) == plan.trailing_block
        for lowering in lowerings:
            t = reduce_windows(x.reshape(plan.x_shape), plan, lowering)
            if plan.summed:
                t = t.sum(plan.summed)
            ours = t.permute(plan.order).reshape(plan.output_shape)
            torch.testing.assert_close(ours, expected)


@given(case=conv_cases(dims=st.integers(1, 3), max_size=6))
def test_every_lowering_of_the_window_sums_matches_einsum(case):
    x, _, _ = case.tensors()
    _check_every_lowering(
        x, input_patches(x.shape, case.kernel_size, case.stride, case.padding, case.dilation, case.groups)
    )


@given(case=conv_transpose_cases(dims=st.integers(1, 3), max_size=4))
def test_every_lowering_of_the_window_sums_matches_einsum_transposed(case):
    x, _, _ = case.tensors()
    patches = input_patches_transpose(
        x.shape, case.kernel_size, case.stride, case.padding, case.output_padding, case.dilation, case.groups
    )
    _check_every_lowering(x, patches)


def test_lowering_is_chosen_by_the_time_model():
    one_by_one = separable_plan(_square_base(input_patches((2, 8, 6, 6), 1, stride=2), "reduce")[0])
    assert one_by_one.lowering == "kron"  # one column: ∏K = 1 multiply-add per element
    three = separable_plan(_square_base(input_patches((2, 8, 6, 6), 3, padding=1), "reduce")[0])
    assert three.lowering == "kron"  # 6×6 maps: the 16 small matrices of the per-axis products cost more
    wide = separable_plan(_square_base(input_patches((2, 8, 64, 64), 3, padding=1), "reduce")[0])
    assert wide.lowering == "axes"  # K_1 = 3 < ∏K = 9 multiply-adds per element, 64-wide rows
    for plan in (three, wide):
        counts = plan.counts()
        assert plan.flops == counts[plan.lowering][0]
        other = "axes" if plan.lowering == "kron" else "kron"
        assert plan.seconds(plan.lowering) < plan.seconds(other)
        # the model: multiply-adds at each lowering's rate plus a fixed cost per batched matrix
        madds, _, _, matrices = counts["axes"]
        assert plan.seconds("axes") == pytest.approx(
            madds * separable.MADD_SECONDS + matrices * separable.SMALL_GEMM_SECONDS
        )
        assert counts["kron"][3] == 0
        assert plan.madd_equivalents == pytest.approx(plan.seconds(plan.lowering) / separable.MADD_SECONDS, abs=0.5)
    assert wide.flops < wide.counts()["kron"][0]  # fewer multiply-adds wins on wide maps
    assert three.flops > three.counts()["axes"][0]  # ... but not when the batched matrices dominate
    # 14×14 maps with many channels: the axes lowering counts fewer multiply-adds, but its
    # thousands of batched matrices make the single GEMM faster (measured 2×, docs/performance.md)
    small_maps = separable_plan(_square_base(input_patches((32, 256, 14, 14), 3, padding=1), "reduce")[0])
    assert small_maps.counts()["axes"][0] < small_maps.counts()["kron"][0]
    assert small_maps.lowering == "kron"
    plain = separable_plan(_square_base(input_patches((2, 8, 6, 6), 1), "reduce")[0])
    assert plain.lowering == "sum" and plain.flops == 0 and plain.madd_equivalents == 0


def test_kron_count_matrix_is_the_kronecker_product():
    a, b = IndexPattern(5, 3, 3, 2, 1, 1), IndexPattern(4, 2, 2, 1, 2, 0)
    cpu = torch.device("cpu")
    m = kron_count_matrix(((a, False), (b, True)), torch.float64, cpu)
    ma, mb = window_count_matrix(a, False, torch.float64, cpu), window_count_matrix(b, True, torch.float64, cpu)
    assert m.shape == (5 * 2, 3 * 2)
    for i in range(5):
        for j in range(2):
            for k in range(3):
                for q in range(2):
                    assert m[i * 2 + j, k * 2 + q] == ma[i, k] * mb[j, q]


def test_window_count_matrix_is_the_window_sum_of_the_pattern():
    for size, kernel, stride, padding, dilation in ((9, 3, 2, 1, 1), (7, 2, 1, 0, 3), (5, 1, 1, 0, 1), (6, 3, 3, 2, 2)):
        dense = tnconv.index_pattern(size, kernel, stride, padding, dilation, dtype=torch.float64)
        pattern = IndexPattern(size, dense.shape[1], kernel, stride, dilation, padding)
        m = window_count_matrix(pattern, False, torch.float64, torch.device("cpu"))
        torch.testing.assert_close(m, dense.sum(1))
        mt = window_count_matrix(pattern, True, torch.float64, torch.device("cpu"))
        torch.testing.assert_close(mt, dense.sum(0))


def test_plan_rejects_other_networks():
    assert separable_plan(tnconv.networks.conv((1, 2, 5), (3, 2, 3))) is None
    assert separable_plan(tnconv.networks.unfold((1, 2, 5), 3)) is None  # windows are open
    sliced = input_patches((2, 3, 8), 3).slice("o1", [0, 2])
    assert separable_plan(_square_base(sliced, "reduce")[0]) is None


def _unfold_mean(x, kernel, stride, padding, dilation):
    """ū by torch: unfold then mean over positions, for D = 1 (as 2-d with a size-1 axis) and 2."""
    if x.dim() == 3:
        u = F.unfold(x.unsqueeze(2), (1, kernel), (1, dilation), (0, padding), (1, stride))
    else:
        u = F.unfold(x, kernel, dilation, padding, stride)
    return u.mean(2)


def _loop_window_sum(x, kernel, stride, padding, dilation):
    """ū by explicit loops over windows (any D; windows in the padding add nothing)."""
    dims = x.dim() - 2
    sizes = x.shape[2:]
    outs = [(sizes[d] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for d in range(dims)]
    taps = [kernel] * dims
    result = torch.zeros(x.shape[0], x.shape[1], *taps, dtype=x.dtype)
    import itertools

    for k in itertools.product(*(range(t) for t in taps)):
        for o in itertools.product(*(range(n) for n in outs)):
            i = [stride * oo + dilation * kk - padding for oo, kk in zip(o, k)]
            if all(0 <= ii < s for ii, s in zip(i, sizes)):
                result[(slice(None), slice(None), *k)] += x[(slice(None), slice(None), *i)]
    return result.flatten(1) / math.prod(outs)


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_inputs_reach_only_their_windows(dims, value):
    kernel, stride, padding, dilation = 3, 2, 1, 2
    size = 6 if dims < 4 else 5
    x = torch.randn(2, 3, *([size] * dims), dtype=torch.float64)
    x[(1, 2, *([1] * dims))] = value
    x[(0, 0, *([size - 1] * dims))] = value  # untouched by every window? (some taps reach it)
    network = input_patches(x.shape, kernel, stride, padding, dilation)
    base, _ = _square_base(network, "reduce")
    ours = contract(base, {"x": x}).reshape(2, -1) / math.prod(network.size(f"o{d + 1}") for d in range(dims))
    if dims <= 2:
        expected = _unfold_mean(x, kernel, stride, padding, dilation)
    else:
        expected = _loop_window_sum(x, kernel, stride, padding, dilation)
    assert torch.equal(ours.isnan(), expected.isnan())
    assert torch.equal(ours.isinf(), expected.isinf())
    finite = expected.isfinite()
    torch.testing.assert_close(ours[finite], expected[finite])
    # and the factor: non-finite exactly where torch's recipe has it
    factor = tnconv.kfac_reduce_factor(x, kernel, stride, padding, dilation)
    recipe = expected.T @ expected / x.shape[0]
    assert torch.equal(factor[0].isnan(), recipe.isnan())


def test_explain_shows_the_chosen_lowering():
    one_by_one = str(tnconv.explain(tnconv.networks.kfac_reduce((4, 16, 12, 12), 1, stride=2)))
    assert "route 'separable'" in one_by_one and "one GEMM" in one_by_one and "rows 2·o only" in one_by_one
    odd = str(tnconv.explain(tnconv.networks.kfac_reduce((4, 16, 13, 13), 1, stride=2)))
    assert "one GEMM" in odd and "M_1 ⊗" in odd  # 13 rows: no view of every other row, all of x
    wide = str(tnconv.explain(tnconv.networks.kfac_reduce((2, 8, 64, 64), 3, padding=1)))
    assert "Mᵀ[3, 64]" in wide and "on the contiguous axis" in wide


def test_kfac_reduce_under_vmap_and_autograd_matches_per_example_calls():
    # under torch.func the finiteness test of the fast lowering cannot read a value: the
    # exact lowering runs, with torch's NaN pattern
    stack = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64)
    stack[1, 0, 0, 2, 2] = float("nan")
    for bias in (False, True):
        batched = torch.func.vmap(lambda xs: tnconv.kfac_reduce_factor(xs, 3, bias=bias))(stack)
        for i in range(2):
            torch.testing.assert_close(batched[i], tnconv.kfac_reduce_factor(stack[i], 3, bias=bias), equal_nan=True)
        assert batched[1].isnan().any() and not batched[0].isnan().any()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    tnconv.kfac_reduce_factor(x, 3).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_kfac_reduce_with_bias_reads_x_once():
    # the bias row and corner come from the same window sums as ū ūᵀ: one pass over x (one
    # evaluation of Σ_o u through the dispatcher), and the corner is exactly 1
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    calls = []
    original = tnconv.execute.separable._run

    def counting(plan, tensors, matrices=None):
        calls.append(plan.x_shape)
        return original(plan, tensors, matrices)

    tnconv.kfac_reduce_factor(x, 3, stride=2, bias=True)  # the runner is built (and cached) here
    try:
        tnconv.execute.separable._run = counting
        factor = tnconv.kfac_reduce_factor(x, 3, stride=2, bias=True)
    finally:
        tnconv.execute.separable._run = original
    assert len(calls) == 1
    assert factor[0, -1, -1].item() == 1.0
    u = F.unfold(x, 3, stride=2).mean(-1)  # ū by torch, [N, d]
    expected_row = u.mean(0)
    torch.testing.assert_close(factor[0, -1, :-1], expected_row)
    torch.testing.assert_close(factor[0, :-1, -1], expected_row)
    torch.testing.assert_close(factor[0, :-1, :-1], u.T @ u / 3)


@given(
    dims=st.integers(2, 3),
    stride=st.integers(2, 3),
    outputs=st.integers(1, 4),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    groups=st.sampled_from([1, 2]),
    kernel_rest=st.sampled_from([1, 2]),
    bias=st.booleans(),
)
def test_strided_rows_are_skipped_and_the_factor_is_exact(
    dims, stride, outputs, batch, channels, groups, kernel_rest, bias
):
    """1×1 (or 1×K) layers of stride S on I = S·O rows: the kron lowering reads every S-th row
    through a view; the factor equals the unfold recipe in float64 (with and without bias)."""
    sizes = [stride * outputs] + [3 + d for d in range(dims - 1)]  # rows of at most 3·4 = 12 elements
    x = torch.randn(batch, channels * groups, *sizes, dtype=torch.float64)
    kernel = (1,) + (kernel_rest,) * (dims - 1)
    patches = input_patches(x.shape, kernel, stride=stride, groups=groups)
    base, _ = _square_base(patches, "reduce")
    plan = separable_plan(base)
    assert plan.lowering == "kron" and plan.row_step == stride
    elements = math.prod(plan.x_shape)
    assert plan.counts()["kron"][1] == elements // stride  # x's elements read: the selected rows only
    factor = tnconv.kfac_reduce_factor(x, kernel, stride=stride, groups=groups, bias=bias)
    # the unfold recipe, independently: ū = mean over windows of every tap, per group
    unfolded = reference_unfold(x, kernel, stride)  # [N, C·∏K, O]
    mean = unfolded.mean(-1).view(batch, groups, -1)  # [N, G, d]
    if bias:
        mean = torch.cat([mean, torch.ones(batch, groups, 1, dtype=x.dtype)], -1)
    expected = torch.einsum("ngi,ngj->gij", mean, mean) / batch
    if bias:
        expected[:, -1, -1] = 1.0
    torch.testing.assert_close(factor, expected)


def reference_unfold(x, kernel, stride):
    """``[N, C·∏K, O]`` patches of a convolution without padding or dilation, by slicing."""
    dims = x.dim() - 2
    outputs = [(x.shape[2 + d] - kernel[d]) // stride + 1 for d in range(dims)]
    columns = []
    for taps in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(t, t + stride * (o - 1) + 1, stride) for t, o in zip(taps, outputs))
        columns.append(x[(slice(None), slice(None), *index)].reshape(x.shape[0], x.shape[1], -1))
    return torch.stack(columns, 2).reshape(x.shape[0], -1, math.prod(outputs))


def test_row_skip_applies_only_where_every_read_row_is_a_multiple_of_the_stride():
    def step(shape, kernel=1, **options):
        base, _ = _square_base(input_patches(shape, kernel, **options), "reduce")
        return separable_plan(base).row_step

    assert step((2, 4, 14, 14), stride=2) == 2
    assert step((2, 4, 15, 14), stride=2) == 1  # I = 15 ≠ S·O = 16: rows 0, 2, …, 14 are not a view of [O, S·inner]
    assert step((2, 4, 14, 14), stride=2, padding=1) == 1  # padded windows
    assert step((2, 4, 14, 14), 3, stride=2) == 1  # K > 1: every row is read
    assert step((2, 4, 14), stride=2) == 1  # 1-d: the rows are single elements, nothing to skip
    assert step((2, 4, 12, 5, 6), stride=3) == 3
    assert step((2, 4, 12, 12, 12), stride=3) == 1  # rows of 144 elements: the one GEMM over all of x is faster
    assert step((2, 4, 112, 112), stride=2) == 1  # rows of 112 elements, likewise


def test_nan_in_a_skipped_row_does_not_reach_the_factor():
    """Rows no window reads are never read: a NaN there stays out of the factor (as with
    torch's unfold); one in a read row reaches exactly its channel's entries."""
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    x[0, 1, 3, 2] = float("nan")  # row 3: skipped at stride 2
    factor = tnconv.kfac_reduce_factor(x, 1, stride=2)
    assert torch.isfinite(factor).all()
    expected = tnconv.kfac_reduce_factor(torch.nan_to_num(x, nan=0.0), 1, stride=2)
    torch.testing.assert_close(factor, expected)
    x[0, 1, 4, 2] = float("nan")  # row 4, column 2: read by the window at (2, 1)
    factor = tnconv.kfac_reduce_factor(x, 1, stride=2)
    unfolded = torch.nn.functional.unfold(x, 1, stride=2).mean(-1)
    reference = unfolded.t() @ unfolded / 2
    torch.testing.assert_close(torch.isnan(factor[0]), torch.isnan(reference))
