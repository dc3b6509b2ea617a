import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute.autodiff import contract
from tnconv.simplify import merge_identities

from .reference import TORCH_CONV, conv_reference
from .strategies import conv_cases

TORCH_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
TORCH_WEIGHT_GRAD = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}


def rel_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def autograd_vjps(fn, x, w, v):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    return torch.autograd.grad(fn(x, w), (x, w), v)


def output_like(case, x, w, lead=(), seed=1):
    if case.dims <= 3:
        shape = TORCH_CONV[case.dims](x, w, None, **case.kwargs()).shape
    else:
        shape = conv_reference(x, w, case.stride, case.padding_tuple, case.dilation, case.groups).shape
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, *shape, dtype=x.dtype, generator=gen)


@given(case=conv_cases(), full_size=st.booleans())
def test_vjps_match_torch(case, full_size):
    x, w, _ = case.tensors()
    v = output_like(case, x, w)
    kw = case.kwargs()
    size = x.shape if full_size else x.shape[2:]
    grad_x = tnconv.conv_input_vjp(w, v, size, **kw)
    grad_w = tnconv.conv_weight_vjp(x, v, w.shape if full_size else w.shape[2:], **kw)
    ref_x, ref_w = autograd_vjps(lambda a, b: TORCH_CONV[case.dims](a, b, None, **kw), x, w, v)
    assert rel_err(grad_x, ref_x) < 1e-10
    assert rel_err(grad_w, ref_w) < 1e-10
    if not isinstance(case.padding, str):  # torch.nn.grad does not take padding strings
        assert rel_err(grad_x, TORCH_INPUT_GRAD[case.dims](x.shape, w, v, **kw)) < 1e-10
        assert rel_err(grad_w, TORCH_WEIGHT_GRAD[case.dims](x, w.shape, v, **kw)) < 1e-10


@given(case=conv_cases(dims=4, max_size=5, allow_same=False))
def test_vjps_four_dims_match_autograd_of_reference(case):
    x, w, _ = case.tensors()
    v = output_like(case, x, w)
    kw = case.kwargs()
    ref_x, ref_w = autograd_vjps(
        lambda a, b: conv_reference(a, b, case.stride, case.padding_tuple, case.dilation, case.groups), x, w, v
    )
    assert rel_err(tnconv.conv_input_vjp(w, v, x.shape[2:], **kw), ref_x) < 1e-10
    assert rel_err(tnconv.conv_weight_vjp(x, v, case.kernel_size, **kw), ref_w) < 1e-10


@given(case=conv_cases(dims=st.integers(1, 4), max_size=5), lead=st.sampled_from([(3,), (2, 2), (1,)]))
def test_mjps_match_a_loop_of_vjps(case, lead):
    x, w, _ = case.tensors()
    kw = case.kwargs()
    y = tnconv.conv(x, w, **kw)
    V = torch.randn(*lead, *y.shape, dtype=x.dtype)
    mjp_x = tnconv.conv_input_vjp(w, V, x.shape, **kw)
    mjp_w = tnconv.conv_weight_vjp(x, V, case.kernel_size, **kw)
    assert mjp_x.shape == (*lead, *x.shape) and mjp_w.shape == (*lead, *w.shape)
    flat_v, flat_x, flat_w = V.reshape(-1, *y.shape), mjp_x.reshape(-1, *x.shape), mjp_w.reshape(-1, *w.shape)
    for m in range(flat_v.shape[0]):
        ref_x, ref_w = autograd_vjps(lambda a, b: tnconv.conv(a, b, **kw), x, w, flat_v[m])
        assert rel_err(flat_x[m], tnconv.conv_input_vjp(w, flat_v[m], x.shape, **kw)) < 1e-12
        assert rel_err(flat_x[m], ref_x) < 1e-10
        assert rel_err(flat_w[m], ref_w) < 1e-10


@given(case=conv_cases(), lead=st.sampled_from([(), (2,)]))
def test_jvps_match_torch_func(case, lead):
    x, w, _ = case.tensors()
    kw = case.kwargs()
    f = lambda a, b: TORCH_CONV[case.dims](a, b, None, **kw)
    x_dot = torch.randn(*lead, *x.shape, dtype=x.dtype)
    w_dot = torch.randn(*lead, *w.shape, dtype=x.dtype)
    jx = tnconv.conv_input_jvp(w, x_dot, **kw)
    jw = tnconv.conv_weight_jvp(x, w_dot, **kw)
    for m in range(lead[0] if lead else 1):
        xd, wd = (x_dot[m], w_dot[m]) if lead else (x_dot, w_dot)
        _, ref_x = torch.func.jvp(lambda a: f(a, w), (x,), (xd,))
        _, ref_w = torch.func.jvp(lambda b: f(x, b), (w,), (wd,))
        assert rel_err(jx[m] if lead else jx, ref_x) < 1e-10
        assert rel_err(jw[m] if lead else jw, ref_w) < 1e-10


def test_jvps_four_dims_match_reference():
    case = dict(stride=(2, 1, 1, 2), padding=(1, 0, 1, 0), dilation=(1, 2, 1, 1))
    x, w = torch.randn(2, 4, 5, 5, 4, 5, dtype=torch.float64), torch.randn(2, 2, 2, 2, 3, 2, dtype=torch.float64)
    x_dot, w_dot = torch.randn_like(x), torch.randn_like(w)
    ref = lambda a, b: conv_reference(a, b, case["stride"], case["padding"], case["dilation"], 2)
    _, ref_jvp = torch.func.jvp(ref, (x, w), (x_dot, w_dot))
    total = tnconv.conv_input_jvp(w, x_dot, **case, groups=2) + tnconv.conv_weight_jvp(x, w_dot, **case, groups=2)
    assert rel_err(total, ref_jvp) < 1e-10


@given(case=conv_cases(dims=st.integers(1, 3), max_size=5))
def test_conv_backward_is_tensor_network_vjp(case):
    """tnconv.conv's gradients equal the explicit TN VJPs, and pass gradcheck."""
    x, w, b = case.tensors()
    kw = case.kwargs()
    inputs = tuple(t.requires_grad_() for t in (x, w, b) if t is not None)
    y = tnconv.conv(x, w, b, **kw)
    v = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, v)
    assert rel_err(grads[0], tnconv.conv_input_vjp(w, v, x.shape, **kw)) < 1e-12
    assert rel_err(grads[1], tnconv.conv_weight_vjp(x, v, w.shape, **kw)) < 1e-12
    if b is not None:
        assert rel_err(grads[2], v.sum([0] + list(range(2, v.dim())))) < 1e-12


@pytest.mark.parametrize(
    "x_shape, w_shape, kw",
    [
        ((2, 4, 5), (2, 2, 3), dict(stride=2, padding=1, groups=2)),
        ((1, 2, 4, 3), (3, 2, 2, 2), dict(padding="same", dilation=(1, 2))),
        ((1, 1, 3, 3, 3, 3), (2, 1, 2, 1, 2, 2), dict(stride=(1, 2, 1, 1), padding=1)),
    ],
)
def test_conv_gradcheck(x_shape, w_shape, kw):
    x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: tnconv.conv(x, w, b, **kw)
    assert torch.autograd.gradcheck(f, (x, w, b), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_strategy_passes_through_to_backward():
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="strategy"):
        tnconv.conv(x, w, strategy="magic")
    y = tnconv.conv(x, w, strategy="einsum")
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(g, torch.nn.grad.conv1d_input(x.shape, w, torch.ones_like(y)))


def test_vjp_networks_are_derived_from_the_convolution():
    tn = tnconv.networks.conv((2, 4, 7), (6, 2, 3), stride=2, groups=2)
    input_vjp = tnconv.networks.conv_input_vjp((2, 4, 7), (6, 2, 3), stride=2, groups=2)
    weight_vjp = tnconv.networks.conv_weight_vjp((2, 4, 7), (6, 2, 3), stride=2, groups=2)
    assert input_vjp == merge_identities(tn.vjp("x")) and input_vjp.simplify() == tn.vjp("x").simplify()
    assert weight_vjp == merge_identities(tn.vjp("w")) and weight_vjp.simplify() == tn.vjp("w").simplify()
    assert not any(node.kind == "identity" for node in input_vjp.nodes)
    batched = tnconv.networks.conv_weight_vjp((2, 4, 7), (6, 2, 3), stride=2, groups=2, batch=3)
    assert batched.input_shape("v") == (3, 2, 6, 3) and batched.output_shape == (3, 6, 2, 3)


W, V = torch.randn(6, 2, 3, 3), torch.randn(2, 6, 4, 4)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: tnconv.conv_input_vjp(W, V, (7, 7), groups=2), ValueError, r"v must have shape \[\*, 2, 6, 5, 5\]"),
        (lambda: tnconv.conv_input_vjp(W, V[0], (6, 6), groups=2), ValueError, "v must have shape"),
        (lambda: tnconv.conv_input_vjp(W, V, (6, 6, 6), groups=2), ValueError, "input_size must be"),
        (lambda: tnconv.conv_input_vjp(W, V, (3, 4, 6, 6), groups=2), ValueError, "batch size 2 but input_size"),
        (lambda: tnconv.conv_input_vjp(W, V, (2, 5, 6, 6), groups=2), ValueError, "divisible by groups"),
        (lambda: tnconv.conv_input_vjp(W, V, (2, 6, 6, 6), groups=2), ValueError, "input channels per group"),
        (lambda: tnconv.conv_input_vjp(W, V, (6, 0), groups=2), ValueError, "input_size must be positive"),
        (lambda: tnconv.conv_input_vjp(W, V, "66", groups=2), TypeError, "input_size"),
        (lambda: tnconv.conv_input_vjp(W, V.double(), (6, 6), groups=2), TypeError, "dtype"),
        (lambda: tnconv.conv_weight_vjp(torch.randn(2, 4, 6, 6), V, 3, stride=2), ValueError, "v must have shape"),
        (lambda: tnconv.conv_weight_vjp(torch.randn(2, 4, 6, 6), V, (3, 3, 3), groups=2), ValueError, "kernel_size"),
        (
            lambda: tnconv.conv_weight_vjp(torch.randn(2, 4, 6, 6), V, (6, 3, 3, 3), groups=2),
            ValueError,
            "does not match",
        ),
        (lambda: tnconv.conv_weight_vjp(torch.randn(2, 4, 6, 6), V, 3, groups=4), ValueError, "groups=4"),
        (lambda: tnconv.conv_weight_vjp(torch.randn(2, 4, 6, 6), V[0], 3, groups=2), ValueError, "v must have"),
        (lambda: tnconv.conv_input_jvp(W, torch.randn(4, 6, 6), groups=2), ValueError, "x_dot must have shape"),
        (lambda: tnconv.conv_weight_jvp(torch.randn(2, 4, 6, 6), W[0], groups=2), ValueError, "w_dot must have"),
        (lambda: tnconv.conv_weight_jvp(torch.randn(2, 4, 6, 6), W, groups=3), ValueError, "groups=3"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_input_vjp_disambiguates_strided_input_sizes():
    # with stride 2, inputs of size 7 and 8 both give 3 outputs; input_size decides
    w, v = torch.randn(3, 2, 3, dtype=torch.float64), torch.randn(1, 3, 3, dtype=torch.float64)
    for size in (7, 8):
        ref = torch.nn.grad.conv1d_input((1, 2, size), w, v, stride=2)
        torch.testing.assert_close(tnconv.conv_input_vjp(w, v, (size,), stride=2), ref)
    assert (
        F.conv1d(torch.zeros(1, 2, 7), w.float(), stride=2).shape
        == F.conv1d(torch.zeros(1, 2, 8), w.float(), stride=2).shape
    )


def test_gradients_of_sliced_networks_have_the_inputs_shape():
    # slicing i1 restricts the sum to the kept input positions: the convolution of a masked x
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    kept = [0, 2, 3, 7]
    mask = torch.zeros(8, dtype=torch.float64)
    mask[kept] = 1
    y = contract(tnconv.networks.conv(x.shape, w.shape, padding=1).slice("i1", kept), x=x, w=w)
    ref = F.conv1d(x * mask, w, padding=1)
    assert rel_err(y, ref) < 1e-12
    v = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad(y, (x, w), v), torch.autograd.grad(ref, (x, w), v)):
        assert rel_err(g, r) < 1e-12


def test_derivatives_of_simplified_networks():
    # the transposed convolution's last positions are reached by no window when output_padding >= stride:
    # simplify() trims them, and the derivatives must still cover the full input
    tn = tnconv.networks.conv_transpose(
        (1, 2, 3, 2), (2, 2, 2, 3), stride=(1, 2), dilation=(2, 1), output_padding=(1, 0)
    )
    w = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    simple = tn.vjp("x").simplify()
    assert simple.slices  # trimmed
    v = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    f = lambda w, v: contract(simple, w=w, v=v)
    assert torch.autograd.gradcheck(f, (w, v))
    assert torch.autograd.gradgradcheck(f, (w, v))


def test_batched_jvp_network():
    tn = tnconv.networks.conv((2, 3, 8), (4, 3, 3))
    jvp = tn.jvp("w", batch=5)
    assert jvp.inputs == ("x", "w_dot") and jvp.input_shape("w_dot") == (5, 4, 3, 3)
    assert jvp.output_shape == (5, 2, 4, 6)
    with pytest.raises(ValueError, match="batch_leg 'n'"):
        tn.jvp("w", batch=5, batch_leg="n")


def test_torch_func_transforms_of_conv():
    """Per-sample gradients (vmap of grad), forward-mode jvp and jacrev through tnconv.conv."""
    x, w = torch.randn(3, 4, 6, 5, dtype=torch.float64), torch.randn(6, 2, 3, 2, dtype=torch.float64)
    kw = dict(stride=(2, 1), padding=1, groups=2)
    mine = lambda x, w: tnconv.conv(x, w, **kw)
    ref = lambda x, w: F.conv2d(x, w, **kw)
    loss = lambda fn: lambda w, x: fn(x[None], w).square().sum()
    per_sample = lambda fn: torch.func.vmap(torch.func.grad(loss(fn)), in_dims=(None, 0))(w, x)
    assert rel_err(per_sample(mine), per_sample(ref)) < 1e-12
    t = torch.randn_like(x)
    jvp = lambda fn: torch.func.jvp(lambda x: fn(x, w), (x,), (t,))[1]
    assert rel_err(jvp(mine), jvp(ref)) < 1e-12
    x1 = x[:1, :, :3, :3]
    assert rel_err(torch.func.jacrev(mine)(x1, w), torch.func.jacrev(ref)(x1, w)) < 1e-12


def test_gradients_of_a_tensor_read_twice():
    """KFC's network reads x twice (x·x'): the gradient is the sum of both VJPs (product rule)."""
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    tn = tnconv.networks.kfc(x.shape, 3, padding=1, groups=2)
    assert tn.inputs == ("x",)
    u = F.unfold(x[..., None], (3, 1), padding=(1, 0)).view(2, 2, 6, 5)  # [n, g, (ci k), o], torch's im2col
    expected = torch.einsum("ngao,ngbo->gab", u, u) / 2
    y = contract(tn, x=x)
    assert rel_err(y, expected) < 1e-12
    v = torch.randn_like(y)
    assert rel_err(torch.autograd.grad(y, x, v)[0], torch.autograd.grad(expected, x, v)[0]) < 1e-12
    t = torch.randn_like(x)
    jvp = lambda fn: torch.func.jvp(fn, (x.detach(),), (t,))[1]
    assert (
        rel_err(
            jvp(lambda x: contract(tn, x=x)),
            jvp(lambda x: tnconv.networks.kfc(x.shape, 3, padding=1, groups=2).contract(strategy="einsum", x=x)),
        )
        < 1e-12
    )
    assert torch.autograd.gradcheck(lambda x: contract(tn, x=x), (x,), check_forward_ad=True)
