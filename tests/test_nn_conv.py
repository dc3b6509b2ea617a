import pytest
import torch

import tnconv

PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (1, dict(kernel_size=3, stride=2, padding=1, dilation=1, groups=2)),
        (2, dict(kernel_size=(3, 2), stride=1, padding="same", dilation=(2, 1), groups=1)),
        (2, dict(kernel_size=3, stride=(2, 1), padding=(1, 2), dilation=1, groups=2, bias=False)),
        (3, dict(kernel_size=2, stride=1, padding=1, dilation=1, groups=1)),
    ],
)
def test_module_matches_torch(dims, kwargs, padding_mode):
    torch_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims]
    tn_cls = {1: tnconv.nn.Conv1d, 2: tnconv.nn.Conv2d, 3: tnconv.nn.Conv3d}[dims]
    ref = torch_cls(4, 6, padding_mode=padding_mode, dtype=torch.float64, **kwargs)
    mine = tn_cls(4, 6, padding_mode=padding_mode, dtype=torch.float64, **kwargs)
    assert mine.state_dict().keys() == ref.state_dict().keys()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, *([6] * dims), dtype=torch.float64)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-10, atol=1e-12)


def test_module_initialisation_matches_torch():
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(3, 5, 3)
    torch.manual_seed(3)
    mine = tnconv.nn.Conv2d(3, 5, 3)
    torch.testing.assert_close(mine.weight, ref.weight)
    torch.testing.assert_close(mine.bias, ref.bias)


def test_convnd_four_dims_matches_reference():
    from .reference import conv_reference

    layer = tnconv.nn.ConvNd(2, 4, (3, 2, 3, 2), stride=(1, 2, 1, 1), padding=1, groups=2, dtype=torch.float64)
    x = torch.randn(2, 2, 5, 5, 4, 3, dtype=torch.float64)
    expected = conv_reference(x, layer.weight, layer.stride, layer.padding, layer.dilation, 2)
    expected = expected + layer.bias.view(1, -1, 1, 1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    assert layer.weight.shape == (4, 1, 3, 2, 3, 2)


def test_convnd_circular_padding_four_dims():
    layer = tnconv.nn.ConvNd(1, 1, 3, padding=1, padding_mode="circular", spatial_dims=4, dtype=torch.float64)
    x = torch.randn(1, 1, 4, 4, 4, 4, dtype=torch.float64)
    padded = x
    for dim in range(2, 6):
        padded = torch.cat([padded.narrow(dim, -1, 1), padded, padded.narrow(dim, 0, 1)], dim=dim)
    expected = tnconv.conv(padded, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), expected)


def test_convnd_needs_dimensions():
    with pytest.raises(ValueError, match="spatial_dims"):
        tnconv.nn.ConvNd(1, 1, 3)


def test_module_gradients_flow():
    layer = tnconv.nn.Conv2d(2, 3, 3, padding=1)
    layer(torch.randn(1, 2, 4, 4)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
