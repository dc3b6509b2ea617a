"""Every execution strategy against the dense einsum reference on the same inputs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import STRATEGIES
from tnconv.execute.native import recognize
from tnconv.spec.geometry import conv_transpose_geometry
from tnconv.symbolic.builders.conv import pattern_nodes, pattern_sizes
from tnconv.symbolic.network import Node, TensorNetwork

from .strategies import conv_cases


def inputs_for(network, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(network.input_shape(name), dtype=torch.float64, generator=gen) for name in network.inputs}


def assert_strategy_matches_einsum(network, strategy, must_apply=True):
    tensors = inputs_for(network)
    expected = network.contract(strategy="einsum", **tensors)
    result = STRATEGIES[strategy](network, tensors)
    if result is None:
        assert not must_apply, f"strategy {strategy} did not apply"
        return
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10)


@given(case=conv_cases(), which=st.sampled_from(["conv", "x", "w", "mjp_x"]))
def test_native_matches_einsum_for_conv_and_vjps(case, which):
    x, w, _ = case.tensors()
    tn = tnconv.networks.conv(x.shape, w.shape, **case.kwargs())
    network = {
        "conv": tn,
        "x": tn.vjp("x"),
        "w": tn.vjp("w"),
        "mjp_x": tn.vjp("x", batch=2),
    }[which]
    assert recognize(network) is not None
    assert_strategy_matches_einsum(network, "native")


@given(case=conv_cases(dims=st.integers(4, 5), max_size=5, allow_same=True))
def test_native_high_dimensional_forward_matches_einsum(case):
    x, w, _ = case.tensors()
    network = tnconv.networks.conv(x.shape, w.shape, **case.kwargs())
    assert recognize(network) is not None
    assert_strategy_matches_einsum(network, "native")


def transposed_network(batch, groups, ci, co, size, kernel, stride, padding, output_padding, dilation):
    """x[n,(g ci),o] Π[i,o,k] w[(g ci),co,k] -> [n,(g co),i]: a transposed convolution."""
    geometry = conv_transpose_geometry(size, kernel, stride, padding, output_padding, dilation)
    d = geometry.dims
    sizes = {"n": batch, "g": groups, "ci": ci, "co": co, **pattern_sizes(geometry)}
    i, o, k = ([(f"{p}{j + 1}",) for j in range(d)] for p in "iok")
    nodes = (
        Node("x", "input", (("n",), ("g", "ci"), *o)),
        *pattern_nodes(geometry),
        Node("w", "input", (("g", "ci"), ("co",), *k)),
    )
    return TensorNetwork(nodes, tuple(sizes.items()), (("n",), ("g", "co"), *i))


@pytest.mark.parametrize(
    "args",
    [
        dict(size=(4,), kernel=3, stride=2, padding=1, output_padding=1, dilation=1),
        dict(size=(3, 4), kernel=(2, 3), stride=(3, 1), padding=(0, 2), output_padding=(2, 0), dilation=(1, 2)),
        dict(size=(2, 3, 2), kernel=2, stride=2, padding=0, output_padding=0, dilation=1),
    ],
)
def test_native_handles_transposed_geometries(args):
    tn = transposed_network(2, 2, 2, 3, **args)
    for network in (tn, tn.vjp("x"), tn.vjp("w")):
        assert recognize(network) is not None
        assert_strategy_matches_einsum(network, "native")


def test_native_does_not_claim_other_networks():
    tn = tnconv.networks.conv((2, 2, 5, 5, 5, 5), (3, 2, 2, 2, 2, 2)).vjp("w")
    assert recognize(tn) is None  # a four-dimensional weight VJP
    assert recognize(tnconv.networks.conv((2, 3, 8), (4, 3, 3)).slice("o1", [0, 1])) is None
    assert recognize(tnconv.networks.conv((2, 3, 8), (4, 3, 3)).vjp("w", batch=3)) is None
    with pytest.raises(ValueError, match="does not apply"):
        tn.contract(strategy="native", **inputs_for(tn))


@given(case=conv_cases(dims=st.integers(1, 4)), which=st.sampled_from(["conv", "w", "mjp_w", "sliced", "reduce"]))
def test_structured_matches_einsum(case, which):
    x, w, _ = case.tensors()
    tn = tnconv.networks.conv(x.shape, w.shape, **case.kwargs())
    network = {
        "conv": tn,
        "w": tn.vjp("w"),
        "mjp_w": tn.vjp("w", batch=2),
        "sliced": tn.vjp("w").slice("o1", [0] * 2),
        "reduce": tn.with_nodes(tn.nodes, output=tn.output[:2]),
    }[which]
    has_patterns = any(n.kind == "pattern" for n in network.simplify().nodes)
    assert_strategy_matches_einsum(network, "structured", must_apply=which != "reduce" and has_patterns)


@given(case=conv_cases(dims=st.integers(1, 4)), which=st.sampled_from(["conv", "x", "w", "mjp_w"]))
def test_auto_and_simplified_match_einsum(case, which):
    x, w, _ = case.tensors()
    tn = tnconv.networks.conv(x.shape, w.shape, **case.kwargs())
    network = {"conv": tn, "x": tn.vjp("x"), "w": tn.vjp("w"), "mjp_w": tn.vjp("w", batch=2)}[which]
    tensors = inputs_for(network)
    expected = network.contract(strategy="einsum", **tensors)
    for strategy in ("auto", "simplified"):
        torch.testing.assert_close(network.contract(strategy=strategy, **tensors), expected, rtol=1e-10, atol=1e-10)
