"""The first-order backward of a native convolution in one kernel call, and the bias fused
into the differentiable contraction: gradients against PyTorch in float64."""

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.execute import autodiff
from tnconv.execute.native import joint_backward_call

from .strategies import conv_cases

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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


def test_one_kernel_call_gives_every_gradient(monkeypatch):
    calls = []
    joint = autodiff.joint_backward
    monkeypatch.setattr(autodiff, "joint_backward", lambda *args: calls.append(args[-1]) or joint(*args))
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    layer = tnconv.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    layer(x).sum().backward()
    assert calls == [(True, True, True)]
    reference = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    reference.load_state_dict(layer.state_dict())
    x2 = x.detach().clone().requires_grad_()
    reference(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    # a single needed gradient, or a pointwise layer: the derived networks, no joint call
    calls.clear()
    tnconv.conv(x.detach(), layer.weight, stride=2, padding=1, groups=2).sum().backward()
    assert calls == []


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
