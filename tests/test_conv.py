import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv

from .reference import TORCH_CONV, conv_reference
from .strategies import conv_cases


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@given(case=conv_cases(), strategy=st.sampled_from(["auto", "einsum"]))
def test_conv_matches_torch(case, strategy):
    x, w, b = case.tensors()
    expected = TORCH_CONV[case.dims](x, w, b, **case.kwargs())
    result = tnconv.conv(x, w, b, **case.kwargs(), strategy=strategy)
    assert result.shape == expected.shape
    assert rel_err(result, expected) < 1e-10


@given(case=conv_cases())
def test_conv_gradients_match_torch(case):
    x, w, b = case.tensors()
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    expected = TORCH_CONV[case.dims](x, w, b, **case.kwargs())
    grad_out = torch.randn_like(expected)
    grads_ref = torch.autograd.grad(expected, inputs, grad_out)
    grads = torch.autograd.grad(tnconv.conv(x, w, b, **case.kwargs()), inputs, grad_out)
    for g, r in zip(grads, grads_ref):
        assert rel_err(g, r) < 1e-10


@pytest.mark.parametrize("dims", [4, 5])
@given(case=st.data())
def test_conv_high_dims_match_loop_of_conv3d(dims, case):
    c = case.draw(conv_cases(dims=dims, max_size=5 if dims == 4 else 4, allow_same=False))
    x, w, b = c.tensors()
    expected = conv_reference(x, w, c.stride, c.padding_tuple, c.dilation, c.groups)
    if b is not None:
        expected = expected + b.view(1, -1, *[1] * dims)
    result = tnconv.conv(x, w, b, **c.kwargs())
    assert rel_err(result, expected) < 1e-10


def test_reference_agrees_with_conv3d():
    # the D>3 reference reduces to the same recursion at D=3 by slicing; check it on a 3-d case
    # by splitting the 3-d convolution as a loop over its first kernel dimension.
    x = torch.randn(2, 4, 6, 5, 7, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 2, 3, dtype=torch.float64)
    kw = dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(1, 2, 1), groups=2)
    expected = F.conv3d(x, w, **kw)
    s, p, d = kw["stride"][0], kw["padding"][0], kw["dilation"][0]
    xp = F.pad(x, [0, 0, 0, 0, p, p])
    loop = sum(
        torch.stack(
            [
                F.conv2d(
                    xp[:, :, s * o + d * k],
                    w[:, :, k],
                    None,
                    kw["stride"][1:],
                    kw["padding"][1:],
                    kw["dilation"][1:],
                    2,
                )
                for o in range(expected.shape[2])
            ],
            dim=2,
        )
        for k in range(3)
    )
    assert rel_err(loop, expected) < 1e-12


def test_conv_6d_runs_and_matches_reference():
    x = torch.randn(1, 2, 3, 3, 2, 3, 3, 2, dtype=torch.float64)
    w = torch.randn(2, 2, 2, 2, 1, 2, 2, 1, dtype=torch.float64)
    stride, pad, dil = (1, 2, 1, 1, 1, 1), (0, 1, 0, 1, 0, 0), (1,) * 6
    expected = conv_reference(x, w, stride, pad, dil, 1)
    assert rel_err(tnconv.conv(x, w, stride=stride, padding=pad), expected) < 1e-10


def test_aliases_check_dimensions():
    x2, w2 = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    assert torch.allclose(tnconv.conv2d(x2, w2), F.conv2d(x2, w2), atol=1e-5)
    with pytest.raises(ValueError, match="conv1d"):
        tnconv.conv1d(x2, w2)
    x1, w1 = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
    assert torch.allclose(tnconv.conv1d(x1, w1, stride=2), F.conv1d(x1, w1, stride=2), atol=1e-5)
    x3, w3 = torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 2, 2, 2)
    assert torch.allclose(tnconv.conv3d(x3, w3, padding="same"), F.conv3d(x3, w3, padding="same"), atol=1e-5)


X, W = torch.randn(2, 4, 8, 8), torch.randn(6, 2, 3, 3)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(groups=3), ValueError, "groups=3"),
        (dict(groups=0), ValueError, "groups must be positive, got 0"),
        (dict(groups=2.0), TypeError, "groups"),
        (dict(stride=0, groups=2), ValueError, "stride must be positive, got 0"),
        (dict(stride=-1, groups=2), ValueError, "stride"),
        (dict(dilation=0, groups=2), ValueError, "dilation must be positive"),
        (dict(padding=-1, groups=2), ValueError, "padding must be >= 0, got -1"),
        (dict(padding="full", groups=2), ValueError, "'full'"),
        (dict(padding="same", stride=2, groups=2), ValueError, "padding='same' requires stride 1"),
        (dict(stride=(1, 2, 3), groups=2), ValueError, r"stride .*\(1, 2, 3\)"),
        (dict(stride=1.5, groups=2), TypeError, "stride .*1.5"),
        (dict(padding=(1, "a"), groups=2), TypeError, "padding"),
        (dict(dilation=5, groups=2), ValueError, "kernel_size=.*larger than the padded input"),
    ],
)
def test_bad_hyperparameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tnconv.conv(X, W, **kwargs)


def test_bad_tensors():
    with pytest.raises(ValueError, match="input channels per group"):
        tnconv.conv(X, torch.randn(6, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="out_channels=5 is not divisible by groups=2"):
        tnconv.conv(X, torch.randn(5, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        tnconv.conv(X, W, torch.randn(5), groups=2)
    with pytest.raises(ValueError, match="weight must have 4 dimensions"):
        tnconv.conv(X, torch.randn(6, 2, 3), groups=2)
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        tnconv.conv(X, torch.randn(6, 2, 0, 3), groups=2)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        tnconv.conv(torch.randn(8), torch.randn(6, 4, 3))  # [C, L] would be an unbatched input
    with pytest.raises(TypeError, match="dtype"):
        tnconv.conv(X.double(), W, groups=2)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        tnconv.conv(X, W.tolist(), groups=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        tnconv.conv(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 3, 3))
