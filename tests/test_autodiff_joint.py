"""The first-order backward of a native convolution in one kernel call, and the bias fused
into the differentiable contraction: gradients against PyTorch in float64."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import tnconv
from tnconv.execute import STRATEGIES, autodiff
from tnconv.execute.native import joint_backward_call, torch_autograd_call
from tnconv.simplify.taps import trim_taps

from .strategies import conv_cases

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@settings(deadline=None, max_examples=60)
@given(case=conv_cases(dims=st.integers(1, 3)), mask=st.sampled_from([(1, 1, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]))
def test_gradients_equal_torch(case, mask):
    x, w, _ = case.tensors()
    b = torch.randn(w.shape[0], dtype=torch.float64)
    x.requires_grad_(bool(mask[0]))
    w.requires_grad_(bool(mask[1]))
    b.requires_grad_(bool(mask[2]))
    y = tnconv.conv(x, w, b, **case.kwargs())
    reference = CONV[len(case.kernel_size)](x, w, b, **case.kwargs())
    torch.testing.assert_close(y, reference)
    if not y.numel():
        return
    v = torch.randn_like(y)
    inputs = [t for t in (x, w, b) if t.requires_grad]
    for got, want in zip(torch.autograd.grad(y, inputs, v), torch.autograd.grad(reference, inputs, v)):
        torch.testing.assert_close(got, want)


class _KernelCalls(TorchDispatchMode):
    """The aten operators run inside the block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls.append((func.__name__, args))
        return func(*args, **(kwargs or {}))

    def named(self, name: str) -> list[tuple]:
        return [args for op, args in self.calls if op == name]


def test_one_kernel_call_gives_every_gradient():
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    layer = tnconv.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    y = layer(x).sum()
    with _KernelCalls() as seen:
        y.backward()
    backward = seen.named("convolution_backward.default")
    assert len(backward) == 1 and list(backward[0][-1]) == [True, True, True]
    reference = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    reference.load_state_dict(layer.state_dict())
    x2 = x.detach().clone().requires_grad_()
    reference(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)


def test_the_function_makes_one_joint_call_where_it_differentiates(monkeypatch):
    # a layer with a trimmed tap stays on tnconv's Function (trim runs first): with every
    # gradient needed, its backward is one joint kernel call too
    calls = []
    joint = autodiff.joint_backward
    monkeypatch.setattr(autodiff, "joint_backward", lambda *args: calls.append(args[-1]) or joint(*args))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch_autograd_call(tnconv.networks.conv(x.shape, w.shape, padding=5, dilation=5)) is None
    y = tnconv.conv(x, w, b, padding=5, dilation=5)
    v = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), v)
    assert calls == [(True, True, True)]
    want = torch.autograd.grad(F.conv2d(x, w, b, padding=5, dilation=5), (x, w, b), v)
    torch.testing.assert_close(got, want)
    # a single needed gradient: the derived network, no joint call
    calls.clear()
    tnconv.conv(x.detach(), w, padding=5, dilation=5).sum().backward()
    assert calls == []


def test_a_1d_layer_goes_to_torch_only_when_its_input_requires_grad():
    # groups=1 1-d: its weight VJP alone may be small_vjp's GEMM (tnconv's Function keeps
    # it); with the input's gradient needed too the backward is the joint kernel call anyway
    w = torch.randn(6, 4, 3, requires_grad=True)
    x = torch.randn(8, 4, 9)
    call = torch_autograd_call(tnconv.networks.conv(x.shape, w.shape))
    assert call is not None and call.small_weight_vjp
    assert "Contraction" in type(tnconv.conv(x, w).grad_fn).__name__
    assert type(tnconv.conv(x.requires_grad_(), w).grad_fn).__name__ == "ConvolutionBackward0"
    x2 = torch.randn(8, 4, 9, dtype=torch.float64, requires_grad=True)
    w2, b2 = w.detach().double().requires_grad_(), torch.randn(6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(8, 6, 7, dtype=torch.float64)
    for x_grad in (True, False):
        inputs = (x2, w2, b2) if x_grad else (w2, b2)
        x_in = x2 if x_grad else x2.detach()
        got = torch.autograd.grad(tnconv.conv(x_in, w2, b2), inputs, v)
        torch.testing.assert_close(got, torch.autograd.grad(F.conv1d(x_in, w2, b2), inputs, v))


def test_which_convolutions_torch_autograd_differentiates():
    conv = tnconv.networks.conv
    assert torch_autograd_call(conv((2, 4, 9, 9), (6, 4, 3, 3), padding=1)) is not None
    assert torch_autograd_call(conv((2, 4, 9), (6, 2, 3), groups=2)) is not None
    assert torch_autograd_call(conv((2, 4, 1, 1), (6, 2, 1, 1), groups=2)) is not None  # one position: a GEMM
    assert torch_autograd_call(conv((2, 4, 5, 5), (6, 4, 1, 1))) is not None  # 25 positions: the kernel
    assert torch_autograd_call(conv((2, 4, 9, 9), (6, 4, 1, 1))) is None  # input VJP: pointwise's matmul
    assert not torch_autograd_call(conv((2, 4, 9, 9), (6, 4, 3, 3))).small_weight_vjp
    assert torch_autograd_call(conv((2, 4, 9), (6, 4, 2), padding="same")) is None  # asymmetric padding
    assert torch_autograd_call(conv((1, 1, 3, 3, 3, 3), (1, 1, 2, 2, 2, 2))) is None  # no torch kernel
    assert torch_autograd_call(conv((2, 4, 9, 9), (6, 4, 3, 3)).vjp("x")) is not None  # conv_transpose2d
    assert torch_autograd_call(conv((2, 4, 9, 9), (6, 4, 3, 3)).vjp("w")) is None  # a weight VJP
    transpose = tnconv.networks.conv_transpose
    assert torch_autograd_call(transpose((2, 4, 5, 5), (4, 3, 3, 3), stride=2, output_padding=1)) is not None
    assert torch_autograd_call(transpose((2, 4, 5), (4, 3, 3), stride=2)).small_weight_vjp  # 1-d groups=1
    assert torch_autograd_call(transpose((2, 4, 9, 9), (4, 3, 1, 1))) is None  # pointwise: a matmul
    assert torch_autograd_call(transpose((2, 4, 1, 1), (4, 3, 1, 1))) is not None  # one position's GEMM
    trimmed = conv((1, 2, 4, 4), (3, 2, 3, 3), padding=5, dilation=5)  # its outer taps read padding only
    assert trim_taps(trimmed) is not None and torch_autograd_call(trimmed) is None


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, transposed",
    [
        ((2, 4, 7, 6), (6, 2, 3, 3), {"padding": 1, "stride": 2, "groups": 2}, False),
        ((3, 4, 1, 1), (6, 2, 1, 1), {"groups": 2}, False),  # one position: torch's GEMM
        ((3, 4, 1, 1), (5, 4, 1, 1), {}, False),
        ((2, 2, 5, 4, 3), (4, 1, 2, 2, 2), {"groups": 2, "dilation": 2, "padding": 1}, False),
        ((2, 3, 8), (4, 3, 3), {"padding": 1, "stride": 2}, False),  # 1-d groups=1: x requires grad
        ((2, 4, 4, 5), (4, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}, True),
        ((2, 4, 6), (4, 2, 3), {"groups": 2, "dilation": 2}, True),
        ((3, 4, 1, 1), (4, 3, 1, 1), {}, True),  # one position: torch's GEMM
    ],
)
def test_torch_differentiated_layers_equal_torch_to_every_order(x_shape, w_shape, kwargs, transposed):
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[1] * kwargs.get("groups", 1) if transposed else w_shape[0], dtype=torch.float64)
    b.requires_grad_()
    network = (tnconv.networks.conv_transpose if transposed else tnconv.networks.conv)(x_shape, w_shape, **kwargs)
    assert torch_autograd_call(network) is not None
    conv = (TRANSPOSE if transposed else CONV)[len(x_shape) - 2]
    mine = tnconv.conv_transpose if transposed else tnconv.conv
    f = lambda x, w, b: mine(x, w, b, **kwargs)  # noqa: E731
    g = lambda x, w, b: conv(x, w, b, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    primals = tuple(t.detach() for t in (x, w, b))
    torch.testing.assert_close(torch.func.jvp(f, primals, tangents)[1], torch.func.jvp(g, primals, tangents)[1])

    # per-sample weight gradients under vmap(grad), as torch.func users write them
    def loss(fn):  # type: ignore[no-untyped-def]
        return lambda w, xn: fn(xn.unsqueeze(0), w, b.detach()).square().sum()

    got = torch.func.vmap(torch.func.grad(loss(f)), in_dims=(None, 0))(w.detach(), x.detach())
    want = torch.func.vmap(torch.func.grad(loss(g)), in_dims=(None, 0))(w.detach(), x.detach())
    torch.testing.assert_close(got, want)


def test_which_convolutions_have_a_joint_backward():
    conv = tnconv.networks.conv
    assert joint_backward_call(conv((2, 4, 9, 9), (6, 4, 3, 3), padding=1)) is not None
    assert joint_backward_call(conv((2, 4, 9, 9), (6, 4, 1, 1))) is None  # pointwise: matrix products
    assert joint_backward_call(conv((2, 4, 5, 5), (6, 4, 1, 1))) is not None  # 25 positions: the kernel
    assert joint_backward_call(conv((2, 4, 9), (6, 4, 2), padding="same")) is None  # asymmetric padding
    assert joint_backward_call(conv((1, 1, 3, 3, 3, 3), (1, 1, 2, 2, 2, 2))) is None  # no torch kernel
    assert joint_backward_call(conv((2, 4, 9, 9), (6, 4, 3, 3)).vjp("x")) is None  # not a forward


def test_higher_derivatives_and_forward_mode_with_a_bias():
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: tnconv.conv(x, w, b, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
    tangents = (torch.zeros_like(x), torch.zeros_like(w), torch.randn_like(b))
    _, got = torch.func.jvp(f, (x.detach(), w.detach(), b.detach()), tangents)
    with fwAD.dual_level():
        dual = f(x.detach(), w.detach(), fwAD.make_dual(b.detach(), tangents[2]))
        tangent = fwAD.unpack_dual(dual).tangent
    expected = tangents[2].view(1, 4, 1).expand(2, 4, 7)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(tangent, expected)


def test_a_strategy_registered_before_native_keeps_the_layers_under_autograd():
    calls = []

    def everything(network, tensors):  # applies to every network: the simplified einsum
        calls.append(network)
        return tnconv.execute.contract(network, tensors, "simplified")

    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch_autograd_call(tnconv.networks.conv(x.shape, w.shape, groups=2)) is not None
    assert autodiff.native_runs_first()
    tnconv.conv(x, w, groups=2).sum().backward()  # through torch's autograd: nothing registered
    tnconv.execute.register_strategy("everything", everything, "test", priority=1)
    try:
        assert not autodiff.native_runs_first()
        y = tnconv.conv(x, w, groups=2)
        assert calls, "auto did not run the registered strategy under autograd"
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
        want = torch.autograd.grad(F.conv2d(x, w, groups=2).sum(), (x, w))
        torch.testing.assert_close((gx, gw), want)
    finally:
        tnconv.execute.dispatch._REGISTRY.pop("everything")
        STRATEGIES.pop("everything")
        tnconv.execute.dispatch._AUTO.clear()  # what register_strategy does, for the removal
        tnconv.execute.dispatch._GENERATION[0] += 1
    assert autodiff.native_runs_first()
