import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import tnconv

from .strategies import conv_transpose_cases
from .transpose_reference import TORCH_CONV_TRANSPOSE, conv_transpose_reference


def rel_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@given(case=conv_transpose_cases())
def test_conv_transpose_matches_torch(case):
    x, w, b = case.tensors()
    expected = TORCH_CONV_TRANSPOSE[case.dims](x, w, b, **case.kwargs())
    assert expected.shape[2:] == case.output_size
    assert rel_err(tnconv.conv_transpose(x, w, b, **case.kwargs()), expected) < 1e-10


@given(case=conv_transpose_cases())
def test_reference_matches_torch(case):
    x, w, _ = case.tensors()
    expected = TORCH_CONV_TRANSPOSE[case.dims](x, w, None, **case.kwargs())
    c = case
    assert (
        rel_err(conv_transpose_reference(x, w, c.stride, c.padding, c.output_padding, c.dilation, c.groups), expected)
        < 1e-12
    )


@given(case=conv_transpose_cases(dims=4, max_size=3, groups=st.integers(1, 2)))
def test_conv_transpose_four_dims_matches_reference(case):
    x, w, b = case.tensors()
    c = case
    expected = conv_transpose_reference(x, w, c.stride, c.padding, c.output_padding, c.dilation, c.groups)
    assert rel_err(tnconv.conv_transpose(x, w, None, **case.kwargs()), expected) < 1e-10


@given(case=conv_transpose_cases())
def test_conv_transpose_gradients_match_torch(case):
    x, w, b = case.tensors()
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    expected = TORCH_CONV_TRANSPOSE[case.dims](x, w, b, **case.kwargs())
    v = torch.randn_like(expected)
    grads_ref = torch.autograd.grad(expected, inputs, v)
    grads = torch.autograd.grad(tnconv.conv_transpose(x, w, b, **case.kwargs()), inputs, v)
    for g, r in zip(grads, grads_ref):
        assert rel_err(g, r) < 1e-10


def test_conv_transpose_gradients_four_dims():
    x = torch.randn(2, 2, 3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 2, 2, 1, 3, dtype=torch.float64, requires_grad=True)
    kw = dict(stride=(2, 1, 1, 2), padding=(1, 0, 0, 1), output_padding=(1, 0, 0, 0), dilation=(1, 1, 2, 1))
    args = (kw["stride"], kw["padding"], kw["output_padding"], kw["dilation"], 1)
    ref = conv_transpose_reference(x, w, *args, create_graph=True)
    y = tnconv.conv_transpose(x, w, **kw)
    assert rel_err(y, ref) < 1e-10
    v = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad(y, (x, w), v), torch.autograd.grad(ref, (x, w), v)):
        assert rel_err(g, r) < 1e-10


@pytest.mark.parametrize(
    "x_shape, w_shape, kw",
    [
        ((2, 4, 3), (4, 1, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
        ((1, 2, 3, 2), (2, 2, 2, 3), dict(stride=(1, 2), dilation=(2, 1), output_padding=(1, 0))),
        ((1, 1, 2, 2, 2, 2), (1, 2, 2, 1, 2, 2), dict(stride=(2, 1, 1, 2), padding=(1, 0, 0, 0))),
    ],
)
def test_conv_transpose_gradcheck(x_shape, w_shape, kw):
    x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[1] * kw.get("groups", 1), dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: tnconv.conv_transpose(x, w, b, **kw)
    assert torch.autograd.gradcheck(f, (x, w, b), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (x, w, b))


@given(case=conv_transpose_cases(dims=st.integers(1, 4), max_size=4))
def test_conv_transpose_is_the_input_vjp(case):
    """docs/reference.md §3: the transposed convolution is the input VJP of the convolution I' -> O."""
    x, w, _ = case.tensors()
    # with output_padding >= stride the convolution from I' with symmetric padding has more than O outputs
    assume(all(op < s for op, s in zip(case.output_padding, case.stride)))
    conv_kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    vjp = tnconv.conv_input_vjp(w, x, case.output_size, **conv_kw)
    assert rel_err(tnconv.conv_transpose(x, w, **case.kwargs()), vjp) < 1e-12


def test_network_is_derived_from_the_convolution():
    tn = tnconv.networks.conv_transpose((2, 4, 3), (4, 3, 3), stride=2, padding=1, output_padding=1, groups=2)
    assert tn.inputs == ("w", "x")
    assert tn.input_shape("x") == (2, 4, 3) and tn.input_shape("w") == (4, 3, 3)
    assert tn.output_shape == (2, 6, 6)
    assert tn.node("w").axes == (("g", "ci"), ("co",), ("k1",))
    (pi,) = [n.pattern for n in tn.nodes if n.kind == "pattern"]
    assert (pi.input_size, pi.output_size, pi.padding) == (6, 3, 1)
    assert tnconv.networks.conv_transpose([2, 4, 3], [4, 3, 3], 2, 1, 1, 2) is tn  # cached


TORCH_MODULES = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
TN_MODULES = {1: tnconv.nn.ConvTranspose1d, 2: tnconv.nn.ConvTranspose2d, 3: tnconv.nn.ConvTranspose3d}


@pytest.mark.parametrize(
    "dims, kwargs",
    [
        (1, dict(kernel_size=3, stride=2, padding=1, output_padding=1, groups=2)),
        (2, dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), dilation=(2, 1), bias=False)),
        (3, dict(kernel_size=2, stride=2, dilation=1, groups=2)),
    ],
)
@pytest.mark.parametrize("nd", [False, True])
def test_modules_match_torch(dims, kwargs, nd):
    ref = TORCH_MODULES[dims](4, 6, dtype=torch.float64, **kwargs)
    mine = (tnconv.nn.ConvTransposeNd if nd else TN_MODULES[dims])(
        4, 6, dtype=torch.float64, **kwargs, **({"spatial_dims": dims} if nd else {})
    )
    assert mine.state_dict().keys() == ref.state_dict().keys()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, *([4] * dims), dtype=torch.float64)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mine(x[0]), ref(x[0]), rtol=1e-10, atol=1e-12)  # unbatched
    smallest = [
        (i - 1) * s - 2 * p + dl * (k - 1) + 1
        for i, s, p, dl, k in zip(x.shape[2:], ref.stride, ref.padding, ref.dilation, ref.kernel_size)
    ]
    largest = [m + s - 1 for m, s in zip(smallest, ref.stride)]
    for size in (smallest, largest, [2, 6, *largest]):
        torch.testing.assert_close(mine(x, output_size=size), ref(x, output_size=size), rtol=1e-10, atol=1e-12)


def test_module_output_size_picks_output_padding():
    ref = torch.nn.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1, dtype=torch.float64)
    mine = tnconv.nn.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1, dtype=torch.float64)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    for size in [(7, 10), (8, 11), (8, 12), (1, 2, 7, 12)]:
        y = mine(x, output_size=size)
        assert y.shape[-2:] == tuple(size[-2:])
        torch.testing.assert_close(y, ref(x, output_size=size), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="output size"):
        mine(x, output_size=(9, 10))
    with pytest.raises(ValueError, match="output_size must have"):
        mine(x, output_size=(7, 10, 3))


def test_module_initialisation_and_gradients_match_torch():
    torch.manual_seed(5)
    ref = torch.nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2, dtype=torch.float64)
    torch.manual_seed(5)
    mine = tnconv.nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2, dtype=torch.float64)
    torch.testing.assert_close(mine.weight, ref.weight)
    torch.testing.assert_close(mine.bias, ref.bias)
    x = torch.randn(2, 2, 3, 3, 3, dtype=torch.float64)
    mine(x).square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad)
    torch.testing.assert_close(mine.bias.grad, ref.bias.grad)


def test_convtransposend_four_dims():
    layer = tnconv.nn.ConvTransposeNd(2, 4, (2, 3, 1, 2), stride=(2, 1, 1, 2), padding=(0, 1, 0, 0), groups=2)
    layer = layer.double()
    x = torch.randn(1, 2, 3, 3, 2, 2, dtype=torch.float64)
    ref = conv_transpose_reference(x, layer.weight.detach(), layer.stride, layer.padding, (0,) * 4, (1,) * 4, 2)
    expected = ref + layer.bias.detach().view(1, -1, 1, 1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    y = layer(x, output_size=(7, 3, 2, 5))
    assert y.shape == (1, 4, 7, 3, 2, 5)
    with pytest.raises(ValueError, match="spatial_dims"):
        tnconv.nn.ConvTransposeNd(2, 4, 3)


X, W = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stride=2, output_padding=2), "output_padding must be smaller than either stride or dilation"),
        (dict(stride=1, dilation=2, output_padding=(2, 0)), "output_padding"),
        (dict(output_padding=(1, 1, 1)), "output_padding must be an int or a tuple of 2"),
        (dict(padding="same"), "padding of a transposed convolution"),
        (dict(padding=-1), "padding must be >= 0"),
        (dict(groups=3), "groups=3"),
        (dict(padding=4), "output size would be"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tnconv.conv_transpose(X, W, **kwargs)


def test_bad_tensors():
    with pytest.raises(ValueError, match="first dimension 3 must equal the input's 4 channels"):
        tnconv.conv_transpose(X, torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match="weight must have 4 dimensions"):
        tnconv.conv_transpose(X, torch.randn(4, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        tnconv.conv_transpose(X, W, torch.randn(3), groups=2)
    with pytest.raises(TypeError, match="dtype"):
        tnconv.conv_transpose(X.double(), W)
    with pytest.raises(ValueError, match="conv_transpose1d must have 3 dimensions"):
        tnconv.conv_transpose1d(X, W)
    with pytest.raises(ValueError, match="zeros"):
        tnconv.nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="zeros"):
        tnconv.nn.ConvTransposeNd(2, 2, (3, 3), padding_mode="circular")


def test_aliases():
    for dims, fn in [(1, tnconv.conv_transpose1d), (2, tnconv.conv_transpose2d), (3, tnconv.conv_transpose3d)]:
        x, w = torch.randn(1, 2, *([3] * dims)), torch.randn(2, 2, *([2] * dims))
        torch.testing.assert_close(fn(x, w, None, 2), TORCH_CONV_TRANSPOSE[dims](x, w, None, 2))
