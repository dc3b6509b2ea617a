"""NaN/inf propagate as in torch, for every operation of the registry and D = 1–4.

The reference (:mod:`tests.nan_reference`) is derived from the network: torch pads with
zero *operands*, never multiplies by the zeros of ``Π``, and curvature products multiply a
materialised ``J``. Where torch has the operation it is compared with torch as well.
Also: the ``"gemm_col2im"`` strategy (input VJPs / transposed convolutions of any D)
against the dense reference.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.execute import STRATEGIES
from tnconv.spec.convspec import ConvSpec
from tnconv.symbolic.registry import OPERATIONS, operation_network
from tnconv.symbolic.squares import SquareNetwork

from .nan_reference import nonfinite_mask, square_nonfinite_mask
from .test_strategies import inputs_for


@st.composite
def specs(draw, dims=st.integers(1, 4)):
    d = draw(dims)
    groups = draw(st.integers(1, 2))
    try:
        return ConvSpec.create(
            dims=d,
            batch=draw(st.integers(1, 2)),
            in_channels=groups * draw(st.integers(1, 2)),
            out_channels=groups * draw(st.integers(1, 2)),
            groups=groups,
            input_size=tuple(draw(st.integers(2, 5 if d < 4 else 3)) for _ in range(d)),
            kernel_size=tuple(draw(st.integers(1, 3)) for _ in range(d)),
            stride=tuple(draw(st.integers(1, 3)) for _ in range(d)),
            padding=tuple(draw(st.integers(0, 1)) for _ in range(d)),
            dilation=tuple(draw(st.integers(1, 2)) for _ in range(d)),
            transposed=draw(st.booleans()),
        )
    except ValueError:
        assume(False)


def _expected(network, tensors):
    if isinstance(network, SquareNetwork):
        return square_nonfinite_mask(network, tensors)
    return nonfinite_mask(network, tensors)


@settings(max_examples=120)
@given(
    spec=specs(),
    name=st.sampled_from(sorted(OPERATIONS)),
    which=st.integers(0, 5),
    where=st.floats(0, 1, exclude_max=True),
    bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
)
def test_nonfinite_inputs_reach_the_outputs_torch_would_make_nonfinite(spec, name, which, where, bad):
    try:
        network = operation_network(name, spec, vectors=2)
    except ValueError:
        assume(False)
    tensors = inputs_for(network)
    key = network.inputs[which % len(network.inputs)]
    flat = tensors[key].view(-1)
    flat[int(where * flat.numel())] = bad
    result = network.contract(**tensors)
    expected = _expected(network, tensors)
    assert torch.equal(~torch.isfinite(result), expected), tnconv.explain(network)


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_every_operation_with_a_nan_in_every_input(dims):
    spec = ConvSpec.create(
        dims=dims, batch=2, in_channels=4, out_channels=2, groups=2, input_size=5 if dims < 4 else 4,
        kernel_size=3, stride=2 if dims != 3 else 1, padding=1,
    )  # fmt: skip
    for name in OPERATIONS:
        try:
            network = operation_network(name, spec, vectors=2)
        except ValueError:
            continue
        for key in network.inputs:
            tensors = inputs_for(network)
            tensors[key].view(-1)[tensors[key].numel() // 3] = float("nan")
            got = ~torch.isfinite(network.contract(**tensors))
            assert torch.equal(got, _expected(network, tensors)), (name, key, dims)


def test_against_torch_itself():
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    x[1, 2, 4, 0] = float("nan")
    w[3, 1, 2, 2] = float("inf")
    args = dict(stride=2, padding=1, groups=2)
    u = F.unfold(x, 3, padding=1)
    for got, want in [
        (tnconv.conv(x, w, **args), F.conv2d(x, w, **args)),
        (tnconv.unfold(x, 3, padding=1, stride=2), F.unfold(x, 3, padding=1, stride=2)),
        (tnconv.fold(u, (9, 9), 3, padding=1), F.fold(u, (9, 9), 3, padding=1)),
        (tnconv.conv_transpose(x, w.transpose(0, 1).reshape(4, 3, 3, 3), stride=2, groups=2),
         F.conv_transpose2d(x, w.transpose(0, 1).reshape(4, 3, 3, 3), stride=2, groups=2)),
    ]:  # fmt: skip
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())


@settings(max_examples=60)
@given(spec=specs(), name=st.sampled_from(["input_vjp", "input_mjp", "conv_transpose"]))
def test_gemm_col2im_matches_einsum(spec, name):
    try:
        network = operation_network(name, spec, vectors=2)
    except ValueError:
        assume(False)
    tensors = inputs_for(network)
    result = STRATEGIES["gemm_col2im"](network, tensors)
    assert result is not None
    torch.testing.assert_close(result, network.contract(strategy="einsum", **tensors), rtol=1e-10, atol=1e-10)


def test_four_dimensional_transposed_convolution_with_bias_runs_gemm_col2im():
    x = torch.randn(2, 4, 3, 3, 2, 3, dtype=torch.float64)
    w = torch.randn(4, 3, 2, 3, 2, 2, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    args = dict(stride=(2, 1, 2, 1), padding=(1, 0, 0, 1), groups=2)
    tn = tnconv.networks.conv_transpose(x.shape, w.shape, **args)
    assert tnconv.explain(tn).strategy == "gemm_col2im"
    expected = tn.contract(strategy="einsum", x=x, w=w) + b.view(1, -1, 1, 1, 1, 1)
    torch.testing.assert_close(tnconv.conv_transpose(x, w, b, **args), expected)
