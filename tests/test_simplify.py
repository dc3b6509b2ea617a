"""Each rewrite rule keeps the network's value (dense evaluation before and after)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv import simplify as rules
from tnconv.symbolic.network import Node, TensorNetwork

from .strategies import conv_cases
from .test_strategies import inputs_for

RULES = [
    rules.merge_identities,
    rules.split_non_overlapping,
    rules.patterns_to_identities,
    rules.trim_untouched_inputs,
    rules.precontract_constants,
    rules.squeeze_size_one,
    rules.simplify,
]


def derived_networks(tn):
    """The convolution and networks derived from it, including one with a private summed leg."""
    reduce_like = tn.with_nodes(tn.nodes, output=tn.output[:2])  # Σ over every output position
    return [tn, tn.vjp("x"), tn.vjp("w"), tn.vjp("w", batch=2), reduce_like]


def assert_same_value(before, after):
    tensors = inputs_for(before)
    expected = before.contract(strategy="einsum", **tensors)
    result = after.contract(strategy="einsum", **tensors)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@given(case=conv_cases(dims=st.integers(1, 3)))
def test_rule_keeps_value(rule, case):
    x, w, _ = case.tensors()
    for network in derived_networks(tnconv.networks.conv(x.shape, w.shape, **case.kwargs())):
        assert_same_value(network, rule(network))


@pytest.mark.parametrize("kernel", [4, 2])
def test_windows_that_tile_the_input_become_reshapes(kernel):
    tn = tnconv.networks.conv((2, 3, 12, 12), (4, 3, kernel, kernel), stride=kernel)
    split = rules.split_non_overlapping(tn)
    patterns = [n.pattern for n in split.nodes if n.kind == "pattern"]
    assert patterns and all(p.input_size == kernel and p.output_size == 1 for p in patterns)
    assert_same_value(tn, split)
    # the selector is an identity: no pattern at all after simplification
    assert not any(n.kind == "pattern" for n in tn.simplify().nodes)
    assert_same_value(tn, tn.simplify())


@pytest.mark.parametrize("kernel, stride, dilation", [(2, 3, 1), (1, 2, 1), (2, 5, 2)])
def test_windows_with_gaps_are_not_split(kernel, stride, dilation):
    # the split would leave a dense 0/1 selector multiplying the data (0·NaN = NaN where torch
    # has a finite value); the strided window views of "structured" read the kept positions
    tn = tnconv.networks.conv((2, 3, 12, 12), (4, 3, kernel, kernel), stride=stride, dilation=dilation)
    assert rules.split_non_overlapping(tn) is tn
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    x[1, 2, 1, 1] = float("nan")  # at a position no window reads
    u = tnconv.unfold(x, kernel, stride=stride, dilation=dilation)
    reference = torch.nn.functional.unfold(x, kernel, stride=stride, dilation=dilation)
    assert torch.equal(u.isnan(), reference.isnan())
    torch.testing.assert_close(u, reference, equal_nan=True)


def test_one_by_one_kernel_becomes_identity():
    tn = tnconv.networks.conv((2, 3, 5, 6), (4, 3, 1, 1))
    simple = tn.simplify()
    assert not any(n.kind in ("pattern", "identity") for n in simple.nodes)
    assert_same_value(tn, simple)
    vjp = tn.vjp("w").simplify()  # the output keeps its size-1 kernel legs
    assert vjp.output_shape == (4, 3, 1, 1)
    assert_same_value(tn.vjp("w"), vjp)


def test_trim_slices_untouched_tail():
    tn = tnconv.networks.conv((1, 1, 10), (1, 1, 3), stride=3)  # windows read 0..8, position 9 unused
    trimmed = rules.trim_untouched_inputs(tn)
    assert dict(trimmed.slices)["i1"] == tuple(range(9))
    assert_same_value(tn, trimmed)


def test_private_position_sum_is_precontracted():
    tn = tnconv.networks.conv((2, 3, 7, 7), (4, 3, 3, 3), padding=1)
    summed = tn.with_nodes(tn.nodes, output=tn.output[:2])
    simple = rules.precontract_constants(summed)
    constants = [n for n in simple.nodes if n.kind == "constant"]
    assert len(constants) == 2 and all(len(n.legs) == 2 for n in constants)  # Σ_o Π[i,o,k] per dimension
    assert_same_value(summed, simple)


def test_ones_are_absorbed_into_constants():
    pi = tnconv.networks.conv((1, 1, 6), (1, 1, 3)).node("pi1")
    sizes = (("i1", 6), ("o1", 4), ("k1", 3))
    net = TensorNetwork((Node("x", "input", (("i1",),)), pi, Node("ones_o", "ones", (("o1",),))), sizes, (("k1",),))
    simple = rules.precontract_constants(net)
    assert [n.kind for n in simple.nodes] == ["input", "constant"]
    assert_same_value(net, simple)


def test_size_one_legs_are_squeezed():
    tn = tnconv.networks.conv((2, 3, 5, 6), (4, 3, 1, 1))  # g = 1 and k = 1
    simple = tn.simplify()
    assert all(simple.size(leg) > 1 for leg in simple.legs)
    assert simple.output_shape == tn.output_shape
    assert_same_value(tn, simple)
