"""Kernel taps that never touch the input are trimmed symbolically (strategy ``"trim"``).

Every registry operation on geometries with such taps (large dilation or padding, D = 1–3,
groups, transposed) against the dense ``einsum`` reference in float64; the bias, autograd
and NaN paths through the front-ends against torch; the trimmed work in ``tnconv.explain``.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.execute.trim import contract_trimmed
from tnconv.simplify.taps import touched_taps, trim_taps
from tnconv.spec import IndexPattern
from tnconv.spec.convspec import ConvSpec
from tnconv.symbolic.registry import OPERATIONS, operation_network

from .test_strategies import inputs_for


def _brute_touched(p: IndexPattern):
    taps = [
        k for k in range(p.kernel_size) if any(0 <= p.input_index(o, k) < p.input_size for o in range(p.output_size))
    ]
    return (taps[0], taps[-1]) if taps else None


@given(
    size=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 9),
    padding=st.integers(0, 30),
)
def test_touched_taps_match_brute_force(size, kernel, stride, dilation, padding):
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    assume(out >= 1)
    p = IndexPattern(size, out, kernel, stride, dilation, padding)
    assert touched_taps(p) == _brute_touched(p)


@st.composite
def far_reaching_specs(draw):
    """Convolutions whose outer taps often read only padding."""
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(2 if d == 0 else 1, 3)) for d in range(dims))
    dilation = tuple(draw(st.integers(2 if d == 0 else 1, 6)) for d in range(dims))
    size = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    reach = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
    # the least padding that leaves an output, up to the whole reach: outer taps then read padding
    padding = tuple(draw(st.integers(max(0, (r + 1 - i) // 2), r + 1)) for r, i in zip(reach, size))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    transposed = draw(st.booleans())
    try:
        return ConvSpec.create(
            dims=dims,
            batch=draw(st.integers(1, 2)),
            in_channels=groups * draw(st.integers(1, 2)),
            out_channels=groups * draw(st.integers(1, 2)),
            groups=groups,
            input_size=size,
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            transposed=transposed,
        )
    except ValueError:
        assume(False)


@settings(max_examples=150)
@given(spec=far_reaching_specs(), name=st.sampled_from(sorted(OPERATIONS)))
def test_every_operation_with_trimmed_taps_matches_einsum(spec, name):
    try:
        network = operation_network(name, spec, vectors=2)
    except ValueError:  # the toggled (transposed / forward) geometry does not exist
        assume(False)
    tensors = inputs_for(network)
    expected = network.contract(strategy="einsum", **tensors)
    trimmed = contract_trimmed(network, tensors)
    if trimmed is not None:
        assert trimmed.shape == expected.shape
        torch.testing.assert_close(trimmed, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(network.contract(**tensors), expected, rtol=1e-10, atol=1e-10)


CASES = [  # (dims, size, kernel, dilation, padding, stride): some taps read only padding
    (2, 16, 3, 36, 36, 1),  # DeepLab's atrous rate 36 on a 16×16 map: the centre tap only
    (1, 3, 3, 5, 4, 1),  # the kept tap's window starts inside the input: positions cropped too
    (3, (4, 3, 5), (3, 1, 3), (6, 1, 2), (6, 0, 3), (1, 1, 2)),
]


@pytest.mark.parametrize("dims,size,kernel,dilation,padding,stride", CASES)
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_named_cases_trim_and_match_einsum(dims, size, kernel, dilation, padding, stride, name):
    spec = ConvSpec.create(
        dims=dims,
        batch=2,
        in_channels=4,
        out_channels=2,
        groups=2,
        input_size=size,
        kernel_size=kernel,
        dilation=dilation,
        padding=padding,
        stride=stride,
    )
    try:
        network = operation_network(name, spec, vectors=2)
    except ValueError:
        pytest.skip("no transposed geometry for these keywords")
    tensors = inputs_for(network)
    expected = network.contract(strategy="einsum", **tensors)
    torch.testing.assert_close(network.contract(**tensors), expected, rtol=1e-10, atol=1e-10)


def test_cropped_input_positions():
    tn = tnconv.networks.unfold((1, 1, 3), 3, dilation=5, padding=4)
    trim = trim_taps(tn)
    assert dict((leg, (a, n)) for leg, a, n in trim.ranges) == {"k1": (1, 1), "i1": (1, 2)}
    pattern = next(node.pattern for node in trim.network.nodes if node.kind == "pattern")
    assert pattern.padding == 0 and pattern.input_size == 2
    x = torch.randn(1, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(tn.contract(x=x), tn.contract(x=x, strategy="einsum"))


def test_no_trim_when_every_tap_reads():
    assert trim_taps(tnconv.networks.conv((2, 3, 8, 8), (4, 3, 3, 3), padding=1)) is None


def test_front_ends_with_bias_and_autograd_match_torch():
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    args = dict(padding=36, dilation=36, groups=2)
    y = tnconv.conv(x, w, b, **args)
    expected = F.conv2d(x, w, b, **args)
    torch.testing.assert_close(y, expected)
    grads = torch.autograd.grad(y.square().sum(), (x, w, b))
    want = torch.autograd.grad(expected.square().sum(), (x, w, b))
    for got, ref in zip(grads, want):
        torch.testing.assert_close(got, ref)
    assert (grads[1][:, :, 0] == 0).all()  # the weight VJP's cut taps are exact zeros
    wt = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bt = torch.randn(6, dtype=torch.float64)
    targs = dict(stride=1, padding=20, groups=2, dilation=18)
    xt = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    # padding 20 with reach 36 on a 5-map: the outer taps fall outside the output
    torch.testing.assert_close(tnconv.conv_transpose(xt, wt, bt, **targs), F.conv_transpose2d(xt, wt, bt, **targs))


def test_unfold_and_factors_with_nan_match_torch():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    x[0, 1, 4, 7] = float("nan")
    args = dict(kernel_size=3, dilation=36, padding=36)
    u = tnconv.unfold(x, **args)
    ref = F.unfold(x, **args)
    torch.testing.assert_close(u, ref, equal_nan=True)
    assert (u.isnan() == ref.isnan()).all()
    factor = tnconv.kfc_factor(x, 3, dilation=36, padding=36)
    # torch's recipe: the cut taps' rows of the unfolded input are zeros, and 0 · NaN is NaN
    recipe = torch.einsum("ndo,neo->de", ref, ref) / x.shape[0]
    assert (factor.reshape(recipe.shape).isnan() == recipe.isnan()).all()
    blocks = factor.reshape(3, 9, 3, 9)
    assert blocks[:, 4, :, 4].isnan().any() and not blocks[:, :4, :, :4].isnan().any()


def test_explain_shows_the_work_fell():
    tn = tnconv.networks.kfc((8, 64, 16, 16), 3, dilation=36, padding=36)
    e = tnconv.explain(tn)
    assert e.strategy == "trim"
    assert "taps" in e.steps[0] and "1/9" in e.steps[0]
    full = tnconv.explain(tn, trim=False)
    assert e.flops * 9 <= full.flops and e.bytes < full.bytes


def test_bias_reaches_output_positions_outside_the_kept_block():
    # transposed: the kept tap's windows start inside the output, the first position is cut
    x, w = torch.randn(1, 1, 1, 1, dtype=torch.float64), torch.randn(1, 1, 2, 1, dtype=torch.float64)
    b = torch.randn(1, dtype=torch.float64)
    args = dict(padding=(1, 0), output_padding=(1, 0), dilation=(2, 1))
    tn = tnconv.networks.conv_transpose(x.shape, w.shape, **args)
    assert trim_taps(tn) is not None and trim_taps(tn).output[1]
    torch.testing.assert_close(tnconv.conv_transpose(x, w, b, **args), F.conv_transpose2d(x, w, b, **args))


def test_fused_square_with_a_shared_kernel_leg_is_trimmed():
    """A fused square network (GGN diagonal) carries the kernel leg in both copies of Π; both
    are cut to the same taps, so a NaN of the output gradient stays in the kept tap."""
    spec = ConvSpec.create(
        dims=2,
        batch=1,
        in_channels=1,
        out_channels=1,
        input_size=(2, 3),
        kernel_size=(1, 3),
        padding=(0, 1),
        dilation=(1, 2),
    )
    network = operation_network("ggn_diagonal", spec, vectors=2)
    trim = trim_taps(network)
    assert trim is not None and ("k2", 1, 1) in trim.ranges
    tensors = inputs_for(network)
    tensors["s"].view(-1)[0] = float("nan")
    result = network.contract(**tensors).reshape(3)
    assert result.isnan().tolist() == [False, True, False]  # taps 0 and 2 read only padding
    tensors["s"].view(-1)[0] = 1.0
    torch.testing.assert_close(network.contract(**tensors), network.contract(**tensors, strategy="einsum"))


def test_kfac_reduce_cut_tap_meets_a_nan_row_as_torch_does():
    # found by the NaN property test: the first tap reads only padding and is cut; its zero
    # row times the NaN row of the tap that reads x[0, 0, 0, 0] is NaN in torch's recipe
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    args = dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0))
    mean = F.unfold(x, **args).mean(2)  # [N, d]
    recipe = mean.T @ mean / x.shape[0]
    factor = tnconv.kfac_reduce_factor(x, **args)
    assert (factor.reshape(recipe.shape).isnan() == recipe.isnan()).all()
    assert recipe.isnan().any() and not recipe.isnan().all()
