"""The per-call fast path: ``"auto"`` remembers, per network, the bound runner of the strategy
that applied (native kernel calls with every argument resolved once). A repeated call must
give the same result as the first one and as torch, for every kind of native call."""

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.caching import bypass, cache_stats
from tnconv.execute import register_strategy
from tnconv.execute.dispatch import _REGISTRY, contract

from .reference import conv_reference
from .strategies import conv_cases, conv_transpose_cases


def _twice(f):
    first, second = f(), f()  # the second call runs the remembered runner
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    return second


def _memo():
    return next(info for info in cache_stats() if info.name.endswith("auto_choice"))


@given(case=conv_cases(), lead=st.sampled_from([(), (2,), (2, 2)]))
def test_repeated_native_calls_match_torch(case, lead):
    x, w, b = case.tensors()
    if case.padding_tuple is None:
        return  # asymmetric 'same': the reference below takes symmetric padding
    kw = case.kwargs()
    y = _twice(lambda: tnconv.conv(x, w, b, **kw))
    torch.testing.assert_close(
        y,
        conv_reference(x, w, case.stride, case.padding_tuple, case.dilation, case.groups)
        + (0 if b is None else b.view(1, -1, *[1] * case.dims)),
    )
    v = torch.randn(*lead, *y.shape, dtype=y.dtype)
    x_ = x.detach().requires_grad_()
    w_ = w.detach().requires_grad_()
    out = conv_reference(x_, w_, case.stride, case.padding_tuple, case.dilation, case.groups)
    for vec in (v.reshape(-1, *y.shape)[:1].reshape(y.shape), v):
        grads = [torch.autograd.grad(out, (x_, w_), g, retain_graph=True) for g in vec.reshape(-1, *y.shape)]
        gx = torch.stack([g[0] for g in grads]).reshape(*vec.shape[: vec.dim() - y.dim()], *x.shape)
        gw = torch.stack([g[1] for g in grads]).sum(0)
        got_x = _twice(lambda: tnconv.conv_input_vjp(w, vec, x.shape[2:], **kw))
        torch.testing.assert_close(got_x, gx)
        if vec.dim() == y.dim():
            got_w = _twice(lambda: tnconv.conv_weight_vjp(x, vec, w.shape[2:], **kw))
            torch.testing.assert_close(got_w, gw)


@given(case=conv_transpose_cases())
def test_repeated_transposed_convolutions_match_torch(case):
    x, w, b = case.tensors()
    if case.dims > 3:
        return
    torch_op = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[case.dims]
    kw = case.kwargs()
    got = _twice(lambda: tnconv.conv_transpose(x, w, b, **kw))
    torch.testing.assert_close(got, torch_op(x, w, b, **kw))


def test_the_runner_is_remembered_and_bypassed_under_bypass():
    tn = tnconv.networks.conv((2, 3, 8), (4, 3, 3), padding=1)
    tensors = {"x": torch.randn(2, 3, 8), "w": torch.randn(4, 3, 3)}
    contract(tn, tensors)
    hits = _memo().hits
    contract(tn, tensors)
    assert _memo().hits == hits + 1
    with bypass():
        contract(tn, tensors)
    assert _memo().hits == hits + 1


def test_registering_a_strategy_forgets_remembered_runners():
    tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
    tensors = {"x": torch.randn(1, 2, 5), "w": torch.randn(3, 2, 3)}
    contract(tn, tensors)
    assert _memo().size > 0
    native = _REGISTRY["native"]
    register_strategy(
        "native", native.run, native.description, priority=native.priority, fuses_bias=True, bind=native.bind
    )
    assert _memo().size == 0
    torch.testing.assert_close(contract(tn, tensors), F.conv1d(tensors["x"], tensors["w"]))
