"""KFC's chunked im2col lowering and the cost model that picks it, against the dense
"einsum" reference in float64."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import contract
from tnconv.execute.im2col import batch_chunk, im2col_gram, im2col_plan, padded_rows, row_chunk
from tnconv.execute.squares import square_recipe
from tnconv.symbolic.builders.curvature import _square_base, input_patches

from .strategies import conv_cases


def _ordered(patches):
    base, scale = _square_base(patches, "expand")
    recipe = square_recipe(base, (1,), (2,), scale, 8)
    return base, scale, recipe


@given(case=conv_cases(dims=st.integers(1, 4), max_size=6), budget=st.sampled_from([1, 200, 10**9]))
def test_chunked_im2col_matches_einsum(case, budget):
    x, _, _ = case.tensors()
    patches = input_patches(x.shape, case.kernel_size, case.stride, case.padding, case.dilation, case.groups)
    base, scale, recipe = _ordered(patches)
    summed = tuple(a for a in range(len(base.output)) if a not in (1, 2))
    ordered = base.with_nodes(base.nodes, output=tuple(base.output[a] for a in (1, 2, *summed)))
    plan = im2col_plan(ordered)
    assert plan is not None
    groups, d = base.output_shape[1], base.output_shape[2]
    gram = im2col_gram(plan, {"x": x}, (groups, d, -1), scale, budget=budget)
    network = tnconv.networks.kfc(x.shape, case.kernel_size, **case.kwargs())
    torch.testing.assert_close(gram, contract(network, {"x": x}, strategy="einsum"))
    torch.testing.assert_close(contract(network, {"x": x}), gram)


def test_chunks_stay_within_the_budget():
    patches = input_patches((64, 8, 16, 16), 3, padding=1)
    base, _ = _square_base(patches, "expand")
    ordered = base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    plan = im2col_plan(ordered)
    per_sample = 8 * 9 * 256 * 4
    assert batch_chunk(plan, 4, budget=10 * per_sample) == 10
    assert batch_chunk(plan, 4, budget=1) == 1
    assert batch_chunk(plan, 4, budget=10**12) == 64


def test_cost_model_prefers_read_once_lowerings():
    kfc = _ordered(input_patches((64, 64, 32, 32), 3, padding=1, groups=1))[2]
    assert kfc.route == "im2col"
    names = [name for name, _, _ in kfc.estimates]
    assert names[:2] == ["direct", "materialized"] and "im2col" in names
    reduce_base, scale = _square_base(input_patches((5, 768, 17, 17), 1), "reduce")
    assert square_recipe(reduce_base, (1,), (2,), scale, 4).route == "separable"


def test_im2col_plan_rejects_other_networks():
    assert im2col_plan(tnconv.networks.conv((1, 2, 5), (3, 2, 3))) is None
    sliced = input_patches((2, 3, 8), 3).slice("o1", [0, 2])
    assert im2col_plan(sliced) is None


def test_direct_route_is_costed_as_it_runs():
    """The fused network runs as window views plus an einsum ("structured"), so its estimate
    is that network's, not the dense one with Π as operands; on a small-map depthwise KFC
    (hundreds of tiny groups) the dense count made the fused einsum look 4× cheaper than it runs."""
    from tnconv.execute.plan import dense_plan
    from tnconv.execute.structured import structured_plan
    from tnconv.simplify import simplify
    from tnconv.symbolic.network import TensorNetwork
    from tnconv.symbolic.squares import square_network

    base, scale = _square_base(input_patches((44, 960, 7, 7), 3, padding=1, groups=960), "expand")
    recipe = square_recipe(base, (1,), (2,), scale, 4)
    fused = square_network(base, (1,), (2,), scale)
    direct = simplify(TensorNetwork(fused.nodes, fused.sizes, fused.output, fused.slices))
    windowed = structured_plan(direct)
    assert windowed is not None
    estimate = dict((name, flops) for name, flops, _ in recipe.estimates)["direct"]
    assert estimate == dense_plan(windowed.network).flops
    assert recipe.route == "im2col"


def test_one_large_sample_is_chunked_by_output_rows():
    patches = input_patches((1, 8, 64, 64), 3, padding=1)
    base, _ = _square_base(patches, "expand")
    ordered = base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    plan = im2col_plan(ordered)
    per_row = 8 * 9 * 64 * 4  # one output row of J: (ci, k1, k2) × o2 floats
    assert batch_chunk(plan, 4, budget=5 * per_row) == 1
    assert row_chunk(plan, 4, budget=5 * per_row) == 5
    assert row_chunk(plan, 4, budget=1) == 1
    assert row_chunk(plan, 4, budget=10**12) == 64
    # several samples per chunk: whole samples, no row chunks
    patches = input_patches((4, 8, 64, 64), 3, padding=1)
    base, _ = _square_base(patches, "expand")
    ordered = base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    assert row_chunk(im2col_plan(ordered), 4, budget=2 * 64 * per_row) == 64


def test_row_chunks_add_up_to_the_factor():
    x = torch.randn(1, 3, 11, 9, dtype=torch.float64)
    x[0, 1, 4, 2] = float("nan")
    patches = input_patches(x.shape, 3, stride=(2, 1), padding=1)
    base, scale = _square_base(patches, "expand")
    ordered = base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    plan = im2col_plan(ordered)
    whole = im2col_gram(plan, {"x": x}, (1, 27, -1), scale, budget=10**9)
    for rows in (1, 2, 5):
        budget = rows * 27 * 9 * 8
        assert row_chunk(plan, 8, budget) == rows
        chunked = im2col_gram(plan, {"x": x}, (1, 27, -1), scale, budget=budget)
        torch.testing.assert_close(chunked, whole, equal_nan=True)
    u = torch.nn.functional.unfold(x, 3, stride=(2, 1), padding=1)[0]  # torch's recipe: NaN where it reaches
    recipe = u @ u.T * scale
    assert torch.equal(whole[0].isnan(), recipe.isnan()) and whole.isnan().any()
    torch.testing.assert_close(whole[0], recipe, equal_nan=True)


def test_kfc_under_vmap_and_grad_matches_per_example_calls():
    # under torch.func the chunked lowering's in-place writes into unbatched buffers are not
    # possible: one out-of-place product of the window views instead
    stack = torch.randn(3, 2, 4, 6, 6, dtype=torch.float64)
    stack[1, 0, 1, 2, 3] = float("nan")
    network = tnconv.networks.kfc(stack.shape[1:], 3, padding=1)
    assert tnconv.explain(network).route == "im2col"
    batched = torch.func.vmap(lambda xs: tnconv.kfc_factor(xs, 3, padding=1))(stack)
    for i in range(3):
        torch.testing.assert_close(batched[i], tnconv.kfc_factor(stack[i], 3, padding=1), equal_nan=True)
    assert batched[1].isnan().any() and not batched[0].isnan().any()
    x = stack[0].clone().requires_grad_()
    tnconv.kfc_factor(x, 3, padding=1).pow(2).sum().backward()
    grad = torch.func.grad(lambda xs: tnconv.kfc_factor(xs, 3, padding=1).pow(2).sum())(stack[0])
    torch.testing.assert_close(grad, x.grad)


def _largest_buffers(run):
    """The largest zero-padded copy and the largest fresh buffer the run allocates (elements)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    sizes = {"pad": 0, "empty": 0}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func)
            for kind in sizes:
                if kind in name and isinstance(out, torch.Tensor):
                    sizes[kind] = max(sizes[kind], out.numel())
            return out

    with Record():
        result = run()
    return result, sizes


@given(
    size=st.integers(8, 20),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 3]),
)
def test_one_padded_sample_never_holds_more_than_its_unfold(size, kernel, stride, padding, dilation, groups):
    """With one sample the unfold recipe holds just ``J``: the padded copy of the input and
    ``J``'s buffer together stay within ``J`` (blocks of rows, each padded on its own), and
    the factor is the dense reference's."""
    if dilation * (kernel - 1) + 1 > size + 2 * padding:
        return
    x = torch.randn(1, 2 * groups, size, size + 1, dtype=torch.float64)
    network = tnconv.networks.kfc(x.shape, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    patches = input_patches(x.shape, kernel, stride, padding, dilation, groups)
    base, scale, _ = _ordered(patches)
    plan = im2col_plan(
        base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], *base.output[3:]))
    )
    j_elements = math.prod(plan.j_shape)
    groups_, d = base.output_shape[1], base.output_shape[2]
    gram, sizes = _largest_buffers(lambda: im2col_gram(plan, {"x": x}, (groups_, d, -1), scale, budget=10**9))
    if padded_rows(plan) > 1:  # (blocks of single rows are the smallest there are)
        assert sizes["pad"] + sizes["empty"] <= j_elements + gram.numel()
    torch.testing.assert_close(gram, contract(network, {"x": x}, strategy="einsum"))


def test_padded_rows_cut_a_padded_sample_in_blocks():
    base, _ = _square_base(input_patches((1, 96, 112, 112), 3, 2, 1, groups=96), "expand")
    plan = im2col_plan(
        base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    )
    rows = padded_rows(plan)
    assert 1 <= rows < 56  # the depthwise stride-2 layer of MobileNetV2 at batch 1: two blocks
    assert tnconv.explain(tnconv.networks.kfc((1, 96, 112, 112), 3, stride=2, padding=1, groups=96)).chunks == 2
    base, _ = _square_base(input_patches((2, 96, 112, 112), 3, 2, 1, groups=96), "expand")
    plan = im2col_plan(
        base.with_nodes(base.nodes, output=(base.output[1], base.output[2], base.output[0], base.output[3]))
    )
    assert padded_rows(plan) == 56  # more samples: the unfold recipe copies J once more
