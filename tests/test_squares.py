import pytest
import torch

from tnconv.execute.squares import contract_square, square_recipe
from tnconv.symbolic.network import Node, TensorNetwork
from tnconv.symbolic.squares import primed_copy, square_network


def matrix_network():
    a = Node("A", "input", (("i",), ("j",)))
    return TensorNetwork((a,), (("i", 3), ("j", 4)), (("i",), ("j",)))


def test_input_nodes_can_share_a_tensor():
    a = Node("A", "input", (("i",), ("j",)))
    a2 = Node("A2", "input", (("j",), ("k",)), source="A")
    tn = TensorNetwork((a, a2), (("i", 3), ("j", 3), ("k", 3)), (("i",), ("k",)))
    assert tn.inputs == ("A",)
    assert tn.input_shape("A") == (3, 3)
    m = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(tn.contract(A=m), m @ m)
    assert "reads A" in str(tn)
    with pytest.raises(ValueError, match="disagree on its shape"):
        TensorNetwork((a, a2), (("i", 3), ("j", 3), ("k", 2)), (("i",), ("k",)))
    with pytest.raises(ValueError, match="only input nodes"):
        Node("p", "ones", (("i",),), source="A")
    # a tangent is a new tensor, not the one the replaced node read
    assert tn.jvp("A2").inputs == ("A", "A2_dot")


def test_primed_copy_renames_summed_and_chosen_legs():
    tn = TensorNetwork(
        (Node("x", "input", (("a",), ("b",))), Node("y", "input", (("b",), ("c",)))),
        (("a", 2), ("b", 3), ("c", 4)),
        (("a",), ("c",)),
    )
    copy, mapping = primed_copy(tn, ["c"])
    assert mapping == {"b": "b'", "c": "c'"}
    assert [n.name for n in copy.nodes] == ["x'", "y'"]
    assert copy.inputs == ("x", "y")


@pytest.mark.parametrize(
    "keep, outer, expected",
    [
        ((), (1,), lambda m: m.T @ m),
        ((), (0,), lambda m: m @ m.T),
        ((0, 1), (), lambda m: m * m),
        ((), (), lambda m: (m * m).sum()),
    ],
)
def test_square_network_and_both_evaluations(keep, outer, expected):
    m = torch.randn(3, 4, dtype=torch.float64)
    tn = matrix_network()
    torch.testing.assert_close(square_network(tn, keep, outer).contract(A=m), expected(m))
    torch.testing.assert_close(contract_square(tn, {"A": m}, keep, outer, scale=0.5), 0.5 * expected(m))
    recipe = square_recipe(tn, keep, outer, 1.0)
    assert (recipe.direct is None) == (recipe.direct_flops > recipe.materialized_flops)


def test_square_network_rejects_bad_axes():
    with pytest.raises(ValueError, match="disjoint"):
        square_network(matrix_network(), keep=(0,), outer=(0,))
    with pytest.raises(ValueError, match="disjoint"):
        square_network(matrix_network(), outer=(2,))


def test_each_path_is_taken_where_cheaper():
    """J = x y over a long summed leg: J^T J is cheaper from the materialised 30x30 J. J = u v^T
    (an outer product): ‖J‖² = ‖u‖²‖v‖² directly is cheaper than forming J."""
    chain = TensorNetwork(
        (Node("x", "input", (("a",), ("s",))), Node("y", "input", (("s",), ("b",)))),
        (("a", 30), ("s", 40), ("b", 30)),
        (("a",), ("b",)),
    )
    assert square_recipe(chain, (), (1,), 1.0).direct is None
    x, y = torch.randn(30, 40, dtype=torch.float64), torch.randn(40, 30, dtype=torch.float64)
    torch.testing.assert_close(contract_square(chain, {"x": x, "y": y}, (), (1,)), (x @ y).T @ (x @ y))
    outer = TensorNetwork(
        (Node("u", "input", (("a",),)), Node("v", "input", (("b",),))),
        (("a", 30), ("b", 30)),
        (("a",), ("b",)),
    )
    assert square_recipe(outer, (), (), 1.0).direct is not None
    u, v = torch.randn(30, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    torch.testing.assert_close(contract_square(outer, {"u": u, "v": v}), torch.outer(u, v).square().sum())


def test_renaming_a_simplified_network_renames_its_constants():
    """Σ_o Π of KFAC-reduce becomes a constant node; renaming its legs (as a primed copy does)
    must rename the constant's sub-network too, also onto the name of a leg summed inside it."""
    import tnconv

    tn = tnconv.networks.kfac_reduce((2, 3, 7), 3, padding=1).simplify()
    constants = [n for n in tn.nodes if n.kind == "constant"]
    assert constants, "Σ_o Π is pre-contracted"
    inner = constants[0].network
    summed = next(leg for leg in inner.legs if leg not in inner.output_legs)  # o1 or o1'
    own = constants[0].legs[0]
    renamed = tn.rename({own: summed})
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(renamed.contract(x=x), tn.contract(x=x))
    torch.testing.assert_close(square_network(tn, keep=(0, 1, 2)).contract(x=x), tn.contract(x=x).square())


def test_non_overlapping_split_keeps_shared_inputs():
    """A patchify KFC (K = S) is rewritten to reshapes; both copies still read x."""
    import tnconv

    tn = tnconv.networks.kfc((2, 3, 8, 8), 4, stride=4)
    simple = tn.simplify()
    assert simple.inputs == ("x",) and not any(
        n.kind == "pattern" and n.pattern.kernel_size == 4 and n.pattern.input_size == 8 for n in simple.nodes
    )
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(simple.contract(x=x), tn.contract(x=x, strategy="einsum"))


def test_structured_strategy_with_one_of_two_readers_unfolded():
    """x feeds a pattern (unfolded into a strided view) and a second node that reads it as is."""
    from tnconv.spec import pattern_of

    nodes = (
        Node("x", "input", (("n",), ("i",))),
        Node("pi", "pattern", (("i",), ("o",), ("k",)), pattern=pattern_of(6, 3)),
        Node("y", "input", (("n",), ("j",)), source="x"),
    )
    tn = TensorNetwork(nodes, (("n", 2), ("i", 6), ("o", 4), ("k", 3), ("j", 6)), (("o",), ("k",), ("j",)))
    x = torch.randn(2, 6, dtype=torch.float64)
    expected = torch.einsum("nok,nj->okj", x.unfold(1, 3, 1), x)
    for strategy in ("einsum", "structured", "auto"):
        torch.testing.assert_close(tn.contract(x=x, strategy=strategy), expected)
