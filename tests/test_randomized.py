"""Randomized VJPs (docs/reference.md §6): unbiased, exact at keep=1, reproducible, and cheaper with keep.

The statistical tests compare the mean of many draws with the exact VJP, with a tolerance
derived from the estimator's variance. The variance is computed from the *contributions*
``G_j`` of the leg's values (``G = Σ_j G_j``), each an exact torch VJP of ``v`` masked to
one value ``j`` of the leg — a reference independent of tnconv:

- bernoulli (keep each value with probability p, scale 1/p): ``Var = (1−p)/p · Σ_j G_j²``;
- fixed (m of M values without replacement, scale M/m): ``Var = M²(1 − m/M) S²/m`` with
  ``S² = Σ_j (G_j − G/M)²/(M − 1)`` (sampling without replacement).

The mean of R independent draws then lies within ``5·sqrt(Var/R)`` of ``G`` entrywise.
"""

import math
from types import SimpleNamespace

import opt_einsum
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute.plan import dense_plan
from tnconv.randomized import estimators, rewrites, sampling

from .strategies import conv_cases

# the randomized package's public and internal names, as one namespace
R = SimpleNamespace(**{**vars(sampling), **vars(rewrites), **vars(estimators), **vars(tnconv.randomized)})

TORCH_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
TORCH_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
TORCH_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
DT = torch.float64

# a 2-d case with every hyper-parameter: O = (3, 5), N = 3, G = 2, Co = 2
CASE = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
KERNEL = (3, 2)


@pytest.fixture(autouse=True)
def tiles_on_small_tensors(monkeypatch):
    """The cost model would make every layer of these small tests one tile per sample (their
    kernel calls cost more than the work tiles save); give every layer as many tiles as the
    model's bounds allow, so that the tile estimators' tiles are exercised (the model itself
    is tested in tests/test_randomized_structured.py)."""
    from tnconv.randomized import tiles

    def most_tiles(geometry, x_shape, v_shape, weight_shape, keep, itemsize, mode="fixed"):
        halo = geometry.dilation[0] * (geometry.kernel[0] - 1)
        height = max(1, math.ceil(halo / (tiles.HALO_FRACTION * geometry.stride[0])))
        return tiles.TileLayout(v_shape[2], max(1, min(tiles.MAX_TILES, v_shape[2] // height)))

    monkeypatch.setattr(tiles, "_layout", most_tiles)


def case_tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    # a mean of 2 makes the contributions share a sign, so |G| is large against the
    # estimator's standard deviation and the statistical test has power
    x = 2 + torch.randn(3, 4, 6, 5, dtype=DT, generator=gen)
    w = torch.randn(4, 2, *KERNEL, dtype=DT, generator=gen)
    v = 2 + torch.randn(3, 4, 3, 5, dtype=DT, generator=gen)
    return x, w, v


def torch_vjps(x, w, v, kwargs):
    """Input and weight VJPs by torch's autograd (accepts padding='same', unlike torch.nn.grad)."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = TORCH_CONV[x.dim() - 2](x, w, None, **kwargs)
    return torch.autograd.grad(y, (x, w), v)


def leg_masks(leg, v_shape, groups, layout=None):
    """One 0/1 mask over v per value of the leg, from the leg's meaning."""
    n, c, *out = v_shape
    per_group = c // groups
    index = torch.zeros(v_shape, dtype=torch.long)
    if leg in ("spatial", "tiles"):  # unit u = t·N + n: sample n, output rows of tile t of dim 1
        rows = torch.tensor(layout.row_tiles()).view(1, 1, -1, *([1] * (len(out) - 1)))
        index += rows * n + torch.arange(n).view(-1, *([1] * (1 + len(out))))
        size = n * layout.tiles
    elif leg == "batch":
        index += torch.arange(n).view(-1, *([1] * (1 + len(out))))
        size = n
    elif leg == "positions":
        index += torch.arange(math.prod(out)).view(1, 1, *out)
        size = math.prod(out)
    elif leg.startswith("spatial:"):
        d = int(leg.split(":")[1]) - 1
        shape = [1, 1] + [1] * len(out)
        shape[2 + d] = out[d]
        index += torch.arange(out[d]).view(shape)
        size = out[d]
    elif leg == "channel":  # channel c = g·Co + co: the in-group index co
        index += (torch.arange(c) % per_group).view(1, -1, *([1] * len(out)))
        size = per_group
    elif leg == "group":
        index += (torch.arange(c) // per_group).view(1, -1, *([1] * len(out)))
        size = groups
    return [(index == j).to(DT) for j in range(size)]


def layout_of(x, w, v, kwargs, keep):
    """The tiles of the tile estimators for this convolution (first spatial dimension)."""
    geometry = estimators._geometry(
        tuple(w.shape[2:]),
        kwargs.get("stride", 1),
        kwargs.get("padding", 0),
        kwargs.get("dilation", 1),
        kwargs.get("groups", 1),
    )
    return geometry.layout(tuple(x.shape), tuple(v.shape), tuple(w.shape), keep, v.element_size())


def contributions(kind, leg, x, w, v, kwargs, keep):
    dims = x.dim() - 2
    masks = leg_masks(leg, v.shape, kwargs["groups"], layout_of(x, w, v, kwargs, keep))
    if kind == "weight":
        parts = [TORCH_WEIGHT[dims](x, w.shape, v * m, **kwargs) for m in masks]
    else:
        parts = [TORCH_INPUT[dims](x.shape, w, v * m, **kwargs) for m in masks]
    return torch.stack(parts)


def estimator_variance(parts, keep, mode):
    size = parts.shape[0]
    if mode == "bernoulli":
        return (1 - keep) / keep * parts.square().sum(0)
    kept = math.ceil(round(keep * size, 9))
    if size == 1:
        return torch.zeros_like(parts[0])
    return size**2 * (1 - kept / size) * parts.var(0) / kept


def randomized_vjp(kind, x, w, v, kwargs, **options):
    if kind == "weight":
        return R.conv_weight_vjp(x, v, w.shape[2:], **kwargs, **options)
    return R.conv_input_vjp(w, v, x.shape, **kwargs, **options)


def draws(kind, x, w, v, kwargs, count, **options):
    return torch.stack([randomized_vjp(kind, x, w, v, kwargs, **options) for _ in range(count)])


def assert_unbiased(samples, parts, keep, mode):
    exact = parts.sum(0)
    bound = 5 * (estimator_variance(parts, keep, mode) / samples.shape[0]).sqrt() + 1e-9 * exact.abs().max()
    error = (samples.mean(0) - exact).abs()
    assert (error <= bound).all(), f"max error/bound {(error / bound).max().item():.3g}"
    # the test has power: on most entries it would reject an estimate biased by half the
    # exact VJP (a missing or doubled rescaling, wrong positions, a biased subset)
    assert (0.5 * exact.abs() > bound).float().mean() > 0.5
    # the draws scatter as the formula says (a 5-sigma band on the pooled sample variance)
    variance = estimator_variance(parts, keep, mode).sum()
    if variance > 0:
        ratio = samples.var(0).sum() / variance
        assert abs(ratio - 1) < 5 * math.sqrt(3 / samples.shape[0]), ratio


@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize(
    "kind, leg",
    [
        ("weight", "spatial"),
        ("weight", "positions"),
        ("weight", "spatial:1"),
        ("weight", "spatial:2"),
        ("weight", "batch"),
        ("input", "channel"),
        ("input", "group"),
        ("input", "spatial:2"),
        ("input", "spatial"),
    ],
)
def test_mean_of_draws_is_the_exact_vjp(kind, leg, mode):
    x, w, v = case_tensors()
    # enough draws that the test has power (see assert_unbiased): the input VJP's legs have
    # entries fed by a single leg value, whose standard deviation is |G|·sqrt((1-p)/p)
    keep, count = 0.5, (100 if kind == "weight" else 200)
    generator = torch.Generator().manual_seed(1)
    samples = draws(kind, x, w, v, CASE, count, keep=keep, leg=leg, mode=mode, generator=generator)
    assert_unbiased(samples, contributions(kind, leg, x, w, v, CASE, keep), keep, mode)


@pytest.mark.parametrize(
    "dims, kwargs, mode",
    [
        (1, dict(stride=2, padding=2, dilation=1, groups=1), "fixed"),
        (3, dict(stride=1, padding=0, dilation=(1, 2, 1), groups=1), "bernoulli"),
    ],
)
@pytest.mark.parametrize("leg", ["positions", "spatial"])
def test_spatial_estimators_unbiased_in_1d_and_3d(dims, kwargs, mode, leg):
    generator = torch.Generator().manual_seed(2)
    x = 2 + torch.randn(2, 2, *([5] * dims), dtype=DT, generator=generator)
    w = torch.randn(3, 2, *([2] * dims), dtype=DT, generator=generator)
    y = TORCH_CONV[dims](x, w, None, **kwargs)
    v = 2 + torch.randn(y.shape, dtype=DT, generator=generator)
    samples = draws("weight", x, w, v, kwargs, 150, keep=0.3, leg=leg, mode=mode, generator=generator)
    assert_unbiased(samples, contributions("weight", leg, x, w, v, kwargs, 0.3), 0.3, mode)


@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize(
    "dims, kwargs, kernel",
    [
        # several tiles per sample: interior tiles (one gather) and edge tiles (zero-padded slabs)
        (2, dict(stride=1, padding=1, dilation=1, groups=2), (3, 2)),
        (1, dict(stride=3, padding="valid", dilation=2, groups=1), (3,)),
        (2, dict(stride=1, padding="same", dilation=1, groups=1), (2, 3)),  # asymmetric padding
        (4, dict(stride=1, padding=1, dilation=1, groups=1), (2, 1, 1, 1)),  # no torch kernel: tnconv's
    ],
)
@pytest.mark.parametrize("kind", ["weight", "input"])
def test_tile_estimators_unbiased_with_several_tiles(dims, kwargs, kernel, mode, kind):
    generator = torch.Generator().manual_seed(3)
    size = (60 if dims == 1 else 40,) + (4,) * (dims - 1)
    x = 2 + torch.randn(2, 4, *size, dtype=DT, generator=generator)
    w = (1 if kind == "input" else 0) + torch.randn(4, 4 // kwargs["groups"], *kernel, dtype=DT, generator=generator)
    y = tnconv.conv(x, w, None, **kwargs)
    v = 2 + torch.randn(y.shape, dtype=DT, generator=generator)
    layout = layout_of(x, w, v, kwargs, 0.4)
    assert layout.tiles >= 3
    if kind == "weight":
        samples = torch.stack(
            [R.conv_weight_vjp(x, v, kernel, **kwargs, keep=0.4, mode=mode, generator=generator) for _ in range(150)]
        )
        vjp = lambda m: R.conv_weight_vjp(x, v * m, kernel, **kwargs, keep=1.0)  # noqa: E731
    else:
        samples = torch.stack(
            [
                R.conv_input_vjp(w, v, x.shape, **kwargs, keep=0.4, leg="spatial", mode=mode, generator=generator)
                for _ in range(500)
            ]
        )
        vjp = lambda m: R.conv_input_vjp(w, v * m, x.shape, **kwargs, keep=1.0)  # noqa: E731
    # (the input VJP's entries near a tile's edge are fed by few units: more draws for power)
    # contributions from the tnconv exact VJP (torch has none for 4-d or 'same' with stride)
    parts = torch.stack([vjp(m) for m in leg_masks("spatial", v.shape, kwargs["groups"], layout)])
    assert_unbiased(samples, parts, 0.4, mode)


@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_tiles_of_a_single_sample_depthwise_stride_two_layer_unbiased(mode, keep):
    """The geometry of ``mobilenet_v2/features.2.conv.1.0`` (depthwise 3×3, stride 2,
    padding 1) at ``N = 1``, where the tiles are the only units; its first tile goes to the
    kernel with symmetric padding (no zero-padded copy)."""
    from tnconv.randomized import tiles

    generator = torch.Generator().manual_seed(4)
    kwargs = dict(stride=2, padding=1, dilation=1, groups=4)
    x = 2 + torch.randn(1, 4, 32, 6, dtype=DT, generator=generator)
    w = torch.randn(4, 1, 3, 3, dtype=DT, generator=generator)
    v = 2 + torch.randn(1, 4, 16, 3, dtype=DT, generator=generator)
    layout = layout_of(x, w, v, kwargs, keep)
    assert layout.tiles == 4
    geometry = estimators._geometry((3, 3), 2, 1, 1, 4)
    plan = tiles._call_plan(tuple(x.shape), tuple(v.shape), tuple(w.shape), geometry, layout, 8)
    assert plan.tiles[0].explicit is None and plan.tiles[0].slab.above == 1
    samples = draws("weight", x, w, v, kwargs, 200, keep=keep, leg="spatial", mode=mode, generator=generator)
    assert_unbiased(samples, contributions("weight", "spatial", x, w, v, kwargs, keep), keep, mode)


# ------------------------------------------------------------------ keep = 1 is exact
@given(case=conv_cases(dims=st.integers(1, 3), max_size=6), data=st.data())
def test_keep_one_is_the_exact_vjp(case, data):
    x, w, _ = case.tensors()
    y = TORCH_CONV[case.dims](x, w, None, case.stride, case.padding, case.dilation, case.groups)
    v = torch.randn_like(y)
    kwargs = case.kwargs()
    expected_x, expected_w = torch_vjps(x, w, v, kwargs)
    mode = data.draw(st.sampled_from(R.MODES))
    leg = data.draw(st.sampled_from(R.legs_of("weight", case.dims)))
    got = R.conv_weight_vjp(x, v, case.kernel_size, **kwargs, keep=1.0, leg=leg, mode=mode)
    torch.testing.assert_close(got, expected_w, rtol=1e-10, atol=1e-10)
    leg = data.draw(st.sampled_from(R.legs_of("input", case.dims)))
    got = R.conv_input_vjp(w, v, x.shape, **kwargs, keep=1, leg=leg, mode=mode)
    torch.testing.assert_close(got, expected_x, rtol=1e-10, atol=1e-10)


@given(case=conv_cases(dims=st.integers(1, 3), max_size=6))
def test_windows_form_with_every_position_kept_is_the_exact_weight_vjp(case):
    """The joint-position path (gathered windows, sliced windows network) at full size."""
    x, w, _ = case.tensors()
    y = TORCH_CONV[case.dims](x, w, None, case.stride, case.padding, case.dilation, case.groups)
    v = torch.randn_like(y)
    network = R.weight_vjp_network(x.shape, v.shape, case.kernel_size, **case.kwargs())
    windows = R.windows_network(network)
    everything = R.Draw(tuple(range(windows.size("o"))), 1.0)
    sliced = R.sliced_network(windows, "o", everything)
    patterns = tuple(node.pattern for node in network.nodes if node.kind == "pattern")
    positions = torch.arange(windows.size("o"))
    u = R.gather_windows(x, patterns, positions)
    presliced = R.resized(sliced, "o", len(everything.indices))
    got = tnconv.execute.contract(presliced, {"u": u, "v": v.flatten(2)}).movedim(-1, 1)
    torch.testing.assert_close(got, torch_vjps(x, w, v, case.kwargs())[1], rtol=1e-10, atol=1e-10)


def test_gathered_windows_are_torch_unfold_columns():
    x = torch.randn(2, 3, 9, 8, dtype=DT)
    kwargs = dict(kernel_size=(3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 3))
    columns = torch.nn.functional.unfold(x, **kwargs)  # [N, C·K1·K2, O1·O2]
    network = R.weight_vjp_network(x.shape, (2, 1, 6, 7), (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 3))
    patterns = tuple(node.pattern for node in network.nodes if node.kind == "pattern")
    assert columns.shape[-1] == 42
    positions = torch.tensor([41, 0, 7, 7, 13])
    u = R.gather_windows(x, patterns, positions)  # [N, P, K1, K2, C]
    expected = columns[:, :, positions].view(2, 3, 3, 2, 5).permute(0, 4, 2, 3, 1)
    torch.testing.assert_close(u, expected, rtol=0, atol=0)


# ------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("leg", ["spatial", "spatial:1", "batch"])
def test_generator_makes_draws_reproducible(leg):
    x, w, v = case_tensors()

    def draw(seed, mode):
        generator = torch.Generator().manual_seed(seed)
        return R.conv_weight_vjp(x, v, KERNEL, **CASE, keep=0.5, leg=leg, mode=mode, generator=generator)

    for mode in R.MODES:
        assert torch.equal(draw(7, mode), draw(7, mode))
    # over a few seeds, draws differ (a constant estimator would not)
    assert len({tuple(draw(seed, "bernoulli").flatten().tolist()) for seed in range(6)}) > 1


def test_input_vjp_generator_reproducible():
    x, w, v = case_tensors()

    def draw(seed):
        return R.conv_input_vjp(w, v, x.shape, **CASE, keep=0.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))


@pytest.mark.parametrize("kind, leg", [("weight", "spatial"), ("weight", "spatial:2"), ("input", "channel")])
def test_nothing_kept_gives_zero(kind, leg):
    x, w, v = case_tensors()
    generator = torch.Generator().manual_seed(0)
    got = randomized_vjp(kind, x, w, v, CASE, keep=1e-12, leg=leg, mode="bernoulli", generator=generator)
    expected_shape = w.shape if kind == "weight" else x.shape
    assert got.shape == expected_shape and not got.any()
    # fixed mode always keeps at least one value
    got = randomized_vjp(kind, x, w, v, CASE, keep=1e-12, leg=leg, mode="fixed", generator=generator)
    assert got.any()


# ---------------------------------------------------------------- work falls with keep
def flops(network):
    return dense_plan(network.simplify()).flops


def flops_without(network, leg):
    """FLOPs of the plan's steps that do not touch ``leg`` (opt_einsum's cost model)."""
    network = network.simplify()
    plan = dense_plan(network)
    symbols = network.symbols()
    sizes = {symbols[name]: network.size(name) for name in network.legs}
    total = without = 0
    for _, removed, step, _, _ in plan.expression.contraction_list:
        inputs = step.split("->")[0].split(",")
        cost = opt_einsum.helpers.flop_count(set("".join(inputs)), bool(removed), len(inputs), sizes)
        total += cost
        without += cost if symbols[leg] not in "".join(inputs) else 0
    assert total == plan.flops
    return without


def test_joint_positions_flops_proportional_to_kept_positions():
    for x_shape, v_shape, kernel, kwargs in [
        ((8, 16, 14, 14), (8, 32, 14, 14), 3, dict(padding=1)),
        ((4, 6, 9, 9, 9), (4, 6, 5, 5, 5), 3, dict(stride=2, padding=1, groups=3)),
        ((4, 8, 20), (4, 8, 20), 3, dict(padding=1, groups=8)),
    ]:
        windows = R.windows_network(R.weight_vjp_network(x_shape, v_shape, kernel, **kwargs))
        size = windows.size("o")
        full = flops(R.sliced_network(windows, "o", R.Draw(tuple(range(size)), 1.0)))
        for keep in (0.5, 0.25, 0.1):
            kept = R.fixed_count(size, keep)
            draw = R.Draw(tuple(range(0, size, size // kept))[:kept], 1.0)
            assert flops(R.sliced_network(windows, "o", draw)) * size == full * kept


@pytest.mark.parametrize(
    "kind, legs, shapes, kwargs",
    [
        ("weight", ["batch", "spatial:1", "spatial:2"], ((8, 16, 14, 14), (8, 32, 12, 12), 3), {}),
        ("weight", ["batch", "spatial:1"], ((6, 8, 30), (6, 8, 15), 4), dict(stride=2, padding=1, groups=4)),
        (
            "input",
            ["channel", "group", "spatial:1", "spatial:2"],
            ((32, 4, 3, 3), (8, 32, 12, 12), (8, 16, 14, 14)),
            dict(groups=4),
        ),
        ("input", ["group", "spatial:1"], ((64, 1, 3), (4, 64, 30), (4, 64, 30)), dict(padding=1, groups=64)),
    ],
)
def test_plan_flops_fall_with_the_kept_fraction(kind, legs, shapes, kwargs):
    """flops(m) lies between m/M·F and m/M·F + (1 − m/M)·A, A = the full plan's steps without the leg.

    Every contraction order's cost is affine in the leg's size with a non-negative
    intercept (the steps without the leg), and the optimiser (exhaustive for ≤ 4 operands)
    returns the cheapest order, so both bounds follow; for the exact network A < F.
    """
    build = R.weight_vjp_network if kind == "weight" else R.input_vjp_network
    network = build(*shapes, **kwargs)
    total = flops(network)
    for leg in legs:
        name = R.network_leg(leg)
        size = network.size(name)
        share = flops_without(network, name) / total
        assert share < 1
        previous = total
        for keep in (0.5, 0.25, 0.1):
            kept = R.fixed_count(size, keep)
            sliced = R.sliced_network(network, name, R.Draw(tuple(range(kept)), 1.0))
            ratio, fraction = flops(sliced) / total, kept / size
            assert fraction - 1e-12 <= ratio <= fraction + (1 - fraction) * share + 1e-12, (leg, keep, ratio)
            assert flops(sliced) <= previous
            previous = flops(sliced)
        assert previous < total


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("keep", [0, -0.5, 1.5, float("nan"), float("inf")])
def test_keep_outside_unit_interval(keep):
    x, w, v = case_tensors()
    with pytest.raises(ValueError, match=rf"keep must be in \(0, 1\], got {keep!r}"):
        R.conv_weight_vjp(x, v, KERNEL, **CASE, keep=keep)
    with pytest.raises(ValueError, match="keep must be in"):
        R.conv_input_vjp(w, v, x.shape, **CASE, keep=keep)
    with pytest.raises(TypeError, match="keep must be a number"):
        R.conv_weight_vjp(x, v, KERNEL, **CASE, keep="half")


def test_unknown_leg_or_mode():
    x, w, v = case_tensors()
    for leg in ["time", "channel", "spatial:3", "spatial:0"]:
        with pytest.raises(ValueError, match=rf"leg must be one of .* got '{leg}'"):
            R.conv_weight_vjp(x, v, KERNEL, **CASE, leg=leg)
    for leg in ["batch", "positions"]:
        with pytest.raises(ValueError, match=rf"leg must be one of .* got '{leg}'"):
            R.conv_input_vjp(w, v, x.shape, **CASE, leg=leg)
    with pytest.raises(ValueError, match="mode must be one of .* got 'uniform'"):
        R.conv_weight_vjp(x, v, KERNEL, **CASE, mode="uniform")
    with pytest.raises(ValueError, match="mode must be one of .* got None"):
        R.conv_input_vjp(w, v, x.shape, **CASE, mode=None)


def test_bad_shapes():
    x, w, v = case_tensors()
    with pytest.raises(ValueError, match="v must have the convolution's output shape"):
        R.conv_weight_vjp(x, v[:, :, :2], KERNEL, **CASE)
    with pytest.raises(ValueError, match="input_size must start with"):
        R.conv_input_vjp(w, v, (3, 5, 6, 5), **CASE)
    with pytest.raises(ValueError, match="input_size must have 2 or 4 entries"):
        R.conv_input_vjp(w, v, (6, 5, 1), **CASE)
    with pytest.raises(ValueError, match="groups"):
        R.conv_weight_vjp(x, v, KERNEL, stride=(2, 1), padding=1, dilation=(1, 2), groups=3)


# ------------------------------------------------------------------ the module option
def module_pair(**options):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(4, 4, KERNEL, **CASE, dtype=DT)
    mine = tnconv.nn.Conv2d(4, 4, KERNEL, **CASE, dtype=DT, **options)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def module_grads(layer, x, r):
    x = x.detach().requires_grad_()
    layer.zero_grad()
    (layer(x) * r).sum().backward()
    return x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()


def test_module_keep_one_is_torch():
    ref, mine = module_pair()
    assert not mine.randomized_backward
    x, _, r = case_tensors()
    y = mine(x.requires_grad_())
    assert "Randomized" not in type(y.grad_fn).__name__
    for got, expected in zip(module_grads(mine, x, r), module_grads(ref, x, r)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_module_state_dict_is_torch_s():
    ref, mine = module_pair(backward_keep=0.5, backward_leg="batch", backward_mode="fixed", backward_input_keep=0.3)
    assert mine.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert torch.equal(mine.state_dict()[key], value)
    assert "backward_keep=0.5" in repr(mine) and "backward_keep" not in repr(tnconv.nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize("mode", R.MODES)
def test_module_weight_grad_unbiased_input_grad_exact(mode):
    ref, mine = module_pair(backward_keep=0.5, backward_mode=mode)
    assert mine.randomized_backward
    x, _, r = case_tensors()
    exact_x, exact_w, exact_b = module_grads(ref, x, r)
    torch.manual_seed(5)
    weights = []
    for _ in range(80):
        grad_x, grad_w, grad_b = module_grads(mine, x, r)
        torch.testing.assert_close(grad_x, exact_x, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_b, exact_b, rtol=1e-10, atol=1e-12)
        weights.append(grad_w)
    parts = contributions("weight", "spatial", x, ref.weight.detach(), r, CASE, 0.5)
    torch.testing.assert_close(parts.sum(0), exact_w)
    assert_unbiased(torch.stack(weights), parts, 0.5, mode)


def test_module_input_keep_randomizes_the_input_grad_only():
    ref, mine = module_pair(backward_input_keep=0.5, backward_mode="fixed")
    with torch.no_grad():  # weights of one sign give the statistical test power (see case_tensors)
        ref.weight.add_(1.0)
        mine.weight.copy_(ref.weight)
    x, _, r = case_tensors()
    exact_x, exact_w, _ = module_grads(ref, x, r)
    torch.manual_seed(6)
    inputs = []
    for _ in range(100):
        grad_x, grad_w, _ = module_grads(mine, x, r)
        torch.testing.assert_close(grad_w, exact_w, rtol=1e-10, atol=1e-12)
        inputs.append(grad_x)
    parts = contributions("input", "channel", x, ref.weight.detach(), r, CASE, 0.5)
    assert_unbiased(torch.stack(inputs), parts, 0.5, "fixed")


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_module_padding_modes_keep_input_grad_exact(padding_mode):
    torch.manual_seed(0)
    ref = torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode=padding_mode, dtype=DT)
    mine = tnconv.nn.Conv1d(2, 3, 3, padding=1, padding_mode=padding_mode, dtype=DT, backward_keep=0.25)
    mine.load_state_dict(ref.state_dict())
    x, r = torch.randn(2, 2, 7, dtype=DT), torch.randn(2, 3, 7, dtype=DT)
    torch.testing.assert_close(module_grads(mine, x, r)[0], module_grads(ref, x, r)[0], rtol=1e-10, atol=1e-12)


def test_convnd_with_randomized_backward():
    layer = tnconv.nn.ConvNd(2, 3, (2, 2, 2, 2), padding=1, dtype=DT, backward_keep=0.5, backward_leg="spatial:4")
    exact = tnconv.nn.ConvNd(2, 3, (2, 2, 2, 2), padding=1, dtype=DT)
    exact.load_state_dict(layer.state_dict())
    x = torch.randn(1, 2, 3, 3, 3, 3, dtype=DT)
    r = torch.randn_like(exact(x))
    got, expected = module_grads(layer, x, r), module_grads(exact, x, r)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-10, atol=1e-12)
    assert got[1].shape == expected[1].shape


def test_module_bad_options():
    for kwargs, name in [
        (dict(backward_keep=0), "backward_keep"),
        (dict(backward_keep=1.5), "backward_keep"),
        (dict(backward_input_keep=-1), "backward_input_keep"),
        (dict(backward_leg="channel"), "backward_leg"),
        (dict(backward_mode="dropout"), "backward_mode"),
    ]:
        with pytest.raises(ValueError, match=rf"{name} must .* got {next(iter(kwargs.values()))!r}"):
            tnconv.nn.Conv2d(2, 2, 3, **kwargs)
    with pytest.raises(ValueError, match="input_keep must be in"):
        R.conv(torch.randn(1, 1, 4), torch.randn(1, 1, 2), input_keep=2.0)


def test_draws_do_not_fill_the_plan_caches():
    """A network sliced for one draw holds its indices: caching one per draw would grow with
    training. Caches may hold one entry per *size* of the kept subset, not one per draw."""
    from tnconv.simplify import simplify

    x, w, v = case_tensors()
    generator = torch.Generator().manual_seed(0)

    def draw_every_leg():
        for leg in R.legs_of("weight", 2):
            R.conv_weight_vjp(x, v, KERNEL, **CASE, keep=0.5, leg=leg, mode="fixed", generator=generator)
        for leg in R.legs_of("input", 2):
            R.conv_input_vjp(w, v, x.shape, **CASE, keep=0.5, leg=leg, mode="fixed", generator=generator)

    def sizes():
        return dense_plan.cache_info().currsize, simplify.cache_info().currsize

    dense_plan.cache_clear()  # (a full cache would hide growth)
    simplify.cache_clear()
    draw_every_leg()
    before = sizes()
    for _ in range(4):
        draw_every_leg()
    assert sizes() == before


# ------------------------------------------------------------ torch.func transforms
def test_vmap_of_grad_through_the_randomized_conv():
    """Per-example gradients with ``vmap(grad(...))``: exact at keep = 1 (torch's own
    per-example gradients), and at keep < 1 each example's gradient is the one its own
    (unbatched) backward gives with the same draw."""
    from torch.func import grad, vmap

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 24, 6, dtype=DT, generator=generator)  # 3 tiles per example
    w = torch.randn(4, 2, 3, 3, dtype=DT, generator=generator)

    def loss(weight, example, keep, seed):
        g = torch.Generator().manual_seed(seed)
        return R.conv(example[None], weight, padding=1, keep=keep, mode="fixed", generator=g).square().sum()

    exact = vmap(grad(loss), in_dims=(None, 0, None, None))(w, x, 1.0, 0)
    reference = vmap(grad(lambda weight, e: TORCH_CONV[2](e[None], weight, padding=1).square().sum()), (None, 0))(w, x)
    torch.testing.assert_close(exact, reference, rtol=1e-10, atol=1e-10)
    sampled = vmap(grad(loss), in_dims=(None, 0, None, None))(w, x, 0.5, 7)
    for example, got in zip(x, sampled):
        torch.testing.assert_close(got, grad(loss)(w, example, 0.5, 7), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(sampled, exact)


def test_module_input_leg_option():
    layer = tnconv.nn.Conv2d(2, 3, 3, padding=1, backward_input_keep=0.5, backward_input_leg="spatial")
    assert "backward_input_leg='spatial'" in repr(layer)
    with pytest.raises(ValueError, match="backward_input_leg must be one of"):
        tnconv.nn.Conv2d(2, 3, 3, backward_input_leg="batch")


def test_generator_of_the_wrong_type_or_device():
    x, w, v = case_tensors()
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        R.conv_weight_vjp(x, v, KERNEL, **CASE, generator=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        R.conv_input_vjp(w, v, x.shape, **CASE, leg="spatial", generator="seed")
    # a CPU generator for tensors on another device (meta tensors stand in for one)
    with pytest.raises(ValueError, match="generator is on device cpu but the tensors are on meta"):
        R.conv_weight_vjp(x.to("meta"), v.to("meta"), KERNEL, **CASE, generator=torch.Generator())


@pytest.mark.parametrize(
    "x_shape, v_shape, kernel, kwargs",
    [
        ((8, 16, 32, 32), (8, 32, 32, 32), (3, 3), dict(padding=1)),
        ((4, 32, 28, 28), (4, 32, 14, 14), (3, 3), dict(stride=2, padding=1, groups=32)),
        ((4, 8, 200), (4, 8, 200), (5,), dict(padding=2)),
    ],
)
def test_tile_plan_work_falls_with_keep(x_shape, v_shape, kernel, kwargs):
    """The tile estimator's plan (kernel FLOPs and elements read) is proportional to the
    number of kept units, ``ceil(keep·U)`` in fixed mode; with every unit kept its FLOPs are
    exactly the exact VJP's (balanced tiles: no tile hangs over the end), and the slabs read
    exceed ``x`` and ``v`` by at most the halo fraction."""
    from tnconv.randomized import estimators, tiles

    stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
    geometry = estimators._geometry(kernel, stride, kwargs.get("padding", 0), dilation, kwargs.get("groups", 1))
    weight_shape = (v_shape[1], x_shape[1] // kwargs.get("groups", 1), *kernel)
    exact_flops = 2 * math.prod(v_shape[:1] + v_shape[2:]) * math.prod(weight_shape)
    previous = None
    for keep in (1.0, 0.5, 0.25, 0.1):
        plan = tiles.tile_plan(x_shape, v_shape, weight_shape, geometry, keep)
        layout = geometry.layout(x_shape, v_shape, weight_shape, keep)
        assert plan.units == v_shape[0] * layout.tiles and plan.kept == R.fixed_count(plan.units, keep)
        fraction = plan.kept / plan.units
        assert plan.flops == pytest.approx(exact_flops * fraction, rel=1e-12)
        assert plan.gathered <= (1 + tiles.HALO_FRACTION) * (math.prod(x_shape) + math.prod(v_shape)) * fraction
        if previous is not None:
            assert plan.flops < previous.flops and plan.gathered < previous.gathered
        previous = plan


# ------------------------------------------------------------------ ConvTranspose
@pytest.mark.parametrize("mode", R.MODES)
def test_conv_transpose_module_weight_grad_unbiased(mode):
    torch.manual_seed(0)
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    ref = torch.nn.ConvTranspose2d(4, 6, 3, **kwargs, dtype=DT)
    mine = tnconv.nn.ConvTranspose2d(4, 6, 3, **kwargs, dtype=DT, backward_keep=0.5, backward_mode=mode)
    mine.load_state_dict(ref.state_dict())
    x = 2 + torch.randn(3, 4, 20, 3, dtype=DT)
    r = 2 + torch.randn_like(ref(x))
    exact = module_grads(ref, x, r)
    torch.manual_seed(1)
    weights = []
    for _ in range(150):
        grads = module_grads(mine, x, r)
        torch.testing.assert_close(grads[0], exact[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grads[2], exact[2], rtol=1e-10, atol=1e-10)
        weights.append(grads[1])
    # the adjoint convolution's weight VJP with x and v exchanged: units of x's positions
    conv_kwargs = dict(stride=2, padding=1, dilation=1, groups=2)
    weight = ref.weight.detach()
    layout = layout_of(r, weight, x, conv_kwargs, 0.5)
    assert layout.tiles >= 2
    masks = leg_masks("spatial", x.shape, 2, layout)
    parts = torch.stack([TORCH_WEIGHT[2](r, weight.shape, x * m, **conv_kwargs) for m in masks])
    torch.testing.assert_close(parts.sum(0), exact[1])
    assert_unbiased(torch.stack(weights), parts, 0.5, mode)
    with pytest.raises(ValueError, match="backward_keep must be in"):
        tnconv.nn.ConvTranspose1d(2, 2, 3, backward_keep=0)
