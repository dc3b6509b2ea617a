import pytest
import torch

import tnconv
from tnconv.symbolic.network import Node, TensorNetwork


def test_differentiate_removes_node_and_frees_legs():
    tn = tnconv.networks.conv((2, 4, 6), (6, 2, 3), groups=2)
    jac = tn.differentiate("w")
    assert "w" not in [n.name for n in jac.nodes]
    # g and co also label the output: the Jacobian's copies are primed
    assert jac.output == tn.output + ((("g'", "co'"), ("ci",), ("k1",)))
    jx = tn.differentiate("x")
    # n and g are output legs too: they are primed and tied by identities
    assert {n.kind for n in jx.nodes if n.name.startswith("delta_")} == {"identity"}
    assert jx.output[len(tn.output) :][0] == ("n'",)


def test_jacobian_matches_autograd():
    x, w = torch.randn(2, 2, 5, dtype=torch.float64), torch.randn(3, 2, 2, dtype=torch.float64)
    tn = tnconv.networks.conv(x.shape, w.shape, stride=2, padding=1)
    jac = tn.differentiate("x").contract(w=w)  # [N, C_out, O, N, C_in, I]
    expected = torch.autograd.functional.jacobian(lambda x_: torch.nn.functional.conv1d(x_, w, stride=2, padding=1), x)
    torch.testing.assert_close(jac, expected)


def test_vjp_and_mjp_against_autograd():
    x, w = torch.randn(2, 4, 6, 5, dtype=torch.float64), torch.randn(6, 2, 3, 2, dtype=torch.float64)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    tn = tnconv.networks.conv(x.shape, w.shape, **kw)
    y = torch.nn.functional.conv2d(x, w, **kw)
    V = torch.randn(3, *y.shape, dtype=torch.float64)
    mjp = tn.vjp("w", batch=3).contract(x=x, v=V)
    for m in range(3):
        expected = torch.nn.grad.conv2d_weight(x, w.shape, V[m], **kw)
        torch.testing.assert_close(mjp[m], expected)
        torch.testing.assert_close(
            tn.vjp("x").contract(w=w, v=V[m]), torch.nn.grad.conv2d_input(x.shape, w, V[m], **kw)
        )


def test_jvp_renames_input():
    tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
    assert tn.jvp("w").inputs == ("x", "w_dot")


def test_simplify_merges_identities_and_keeps_value():
    tn = tnconv.networks.conv((2, 4, 6), (4, 2, 3), padding=1, groups=2).vjp("x")
    simple = tn.simplify()
    assert not any(n.kind == "identity" for n in simple.nodes)
    assert simple.output_legs == ("n", "g", "ci", "i1")
    w, v = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(simple.contract(w=w, v=v), tn.contract(w=w, v=v))


def test_slice_restricts_every_node():
    x, w = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    tn = tnconv.networks.conv(x.shape, w.shape)
    kept = [0, 2, 5]
    y = tn.slice("o1", kept).contract(x=x, w=w)
    torch.testing.assert_close(y, torch.nn.functional.conv1d(x, w)[..., kept])
    # slicing a summed leg keeps only those kernel taps
    yk = tn.slice("k1", [1]).contract(x=x, w=w)
    torch.testing.assert_close(yk, torch.nn.functional.conv1d(x[..., 1:7], w[..., 1:2]))
    # slicing twice composes
    torch.testing.assert_close(tn.slice("o1", kept).slice("o1", [2]).contract(x=x, w=w), y[..., 2:3])
    with pytest.raises(ValueError, match="out of range"):
        tn.slice("o1", [6])
    with pytest.raises(ValueError, match="leg 'q'"):
        tn.slice("q", [0])


def test_fuse_contracts_shared_legs():
    a = TensorNetwork((Node("A", "input", (("i",), ("j",))),), (("i", 3), ("j", 4)), (("i",), ("j",)))
    b = TensorNetwork((Node("B", "input", (("j",), ("k",))),), (("j", 4), ("k", 2)), (("j",), ("k",)))
    A, B = torch.randn(3, 4), torch.randn(4, 2)
    torch.testing.assert_close(a.fuse(b).contract(A=A, B=B), A @ B)


def test_letters_suffice_for_six_dims():
    tn = tnconv.networks.conv((1, 2) + (3,) * 6, (2, 2) + (2,) * 6)
    eq = tn.vjp("w", batch=2).equation()
    assert len(set(eq) - set(",->")) == len(tn.vjp("w", batch=2).legs)


def test_contract_checks_inputs():
    tn = tnconv.networks.conv((2, 3, 6), (4, 3, 3))
    with pytest.raises(TypeError, match="missing \\['w'\\]"):
        tn.contract(x=torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"w must have shape \(4, 3, 3\)"):
        tn.contract(x=torch.randn(2, 3, 6), w=torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="strategy"):
        tn.contract(x=torch.randn(2, 3, 6), w=torch.randn(4, 3, 3), strategy="magic")


def test_invalid_networks_are_rejected():
    with pytest.raises(ValueError, match="has no size"):
        TensorNetwork((Node("A", "input", (("i",),)),), (), (("i",),))
    with pytest.raises(ValueError, match="carried by no node"):
        TensorNetwork((Node("A", "input", (("i",),)),), (("i", 2), ("j", 2)), (("j",),))
    with pytest.raises(ValueError, match="kind"):
        Node("A", "tensor", (("i",),))


def test_networks_are_hashable_and_cached():
    a = tnconv.networks.conv((2, 3, 6), (4, 3, 3), stride=2)
    b = tnconv.networks.conv([2, 3, 6], [4, 3, 3], stride=(2,))
    assert a is b and hash(a) == hash(b)
