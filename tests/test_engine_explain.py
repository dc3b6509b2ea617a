"""tnconv.explain: the strategy it names is the one "auto" runs, and it rejects bad input."""

import pytest
import torch

import tnconv
from tnconv.execute import contract


@pytest.mark.parametrize(
    "network, strategy",
    [
        (tnconv.networks.conv((1, 2, 5), (3, 2, 3)), "native"),
        (tnconv.networks.fold((1, 18, 9), (5, 5), 3), "col2im"),
        (tnconv.networks.unfold_transpose((1, 2, 4), 3, stride=2), "col2im"),
        (tnconv.networks.kfac_reduce((2, 3, 6, 6), 3), "square"),
        (tnconv.networks.kfc((2, 3, 6, 6), 3), "square"),
    ],
)
def test_explained_strategy_applies_and_agrees(network, strategy):
    explanation = tnconv.explain(network)
    assert explanation.strategy == strategy
    assert explanation.flops > 0 and explanation.bytes > 0 and explanation.steps
    tensors = {name: torch.randn(network.input_shape(name), dtype=torch.float64) for name in network.inputs}
    torch.testing.assert_close(
        contract(network, tensors, explanation.strategy), contract(network, tensors, strategy="einsum")
    )
    assert str(explanation).startswith(f"strategy {strategy!r}")


def test_explain_checks_its_arguments():
    network = tnconv.networks.kfc((2, 3, 6, 6), 3)
    assert (
        tnconv.explain(network, x=torch.zeros(2, 3, 6, 6, dtype=torch.float64)).bytes
        == 2 * tnconv.explain(network).bytes
    )
    with pytest.raises(TypeError, match="network"):
        tnconv.explain("kfc")
    with pytest.raises(ValueError, match="x must have shape"):
        tnconv.explain(network, x=(2, 3, 6, 7))
    with pytest.raises(TypeError, match="x must be a tensor or a shape"):
        tnconv.explain(network, x=3)
