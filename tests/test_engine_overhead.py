"""The per-call fast path: ``"auto"`` remembers, per network, the bound runner of the strategy
that applied (native kernel calls with every argument resolved once). A repeated call must
give the same result as the first one and as torch, for every kind of native call."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.caching import bypass, cache_stats
from tnconv.execute import register_strategy
from tnconv.execute.dispatch import _AUTO, _REGISTRY, bind, contract

from .nan_reference import square_nonfinite_mask
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


# ------------------------------------------------------------- bound runners (dispatch.bind)


@given(
    case=conv_cases(),
    approx=st.sampled_from(["expand", "reduce"]),
    bias=st.booleans(),
)
def test_repeated_factor_calls_use_fresh_data_every_dtype_and_nan(case, approx, bias):
    """The curvature front-ends keep one bound runner per signature: a repeated call on new
    data (float64, then float32 of the same shape, then with a NaN) must equal the reference
    of that data, and NaN must reach exactly what the unfold recipe's factor makes NaN."""
    from .reference_curvature import factor_reference, unfold_reference

    factor = tnconv.kfc_factor if approx == "expand" else tnconv.kfac_reduce_factor
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups, bias=bias)
    x, _, _ = case.tensors()
    for data in (x, torch.randn_like(x), torch.randn_like(x)):
        unfolded = unfold_reference(data, case.kernel_size, case.stride, case.padding, case.dilation)
        expected = factor_reference(unfolded, case.groups, approx, bias)
        torch.testing.assert_close(factor(data, case.kernel_size, **kw), expected)
        torch.testing.assert_close(factor(data.float(), case.kernel_size, **kw), expected.float(), rtol=1e-4, atol=1e-5)
    poisoned = x.clone()
    poisoned.view(-1)[0] = float("nan")
    hyper = {k: v for k, v in kw.items() if k != "bias"}
    network = (tnconv.networks.kfc if approx == "expand" else tnconv.networks.kfac_reduce)(
        x.shape, case.kernel_size, **hyper
    )
    for _ in range(2):  # first and repeated call
        got = factor(poisoned, case.kernel_size, **hyper)
        assert torch.equal(got.isnan(), square_nonfinite_mask(network, {"x": poisoned}))


def test_bind_checks_inputs_unless_the_caller_has():
    tn = tnconv.networks.kfac_reduce((2, 3, 8), 3)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    checking, trusting = bind(tn), bind(tn, tn.input_shapes)
    expected = contract(tn, {"x": x}, strategy="einsum")
    for run in (checking, trusting):
        torch.testing.assert_close(run({"x": x}), expected)
        torch.testing.assert_close(run({"x": x}), expected)  # the resolved runner
    with pytest.raises(ValueError, match="x must have shape"):
        checking({"x": torch.randn(2, 3, 9)})
    with pytest.raises(TypeError, match="missing"):
        checking({"y": x})
    # shapes the caller claims to have checked do not cover the network: it checks itself
    with pytest.raises(ValueError, match="x must have shape"):
        bind(tn, (("x", (2, 3, 9)),))({"x": torch.randn(2, 3, 9)})


def test_a_bound_runner_resolves_once_and_again_after_register_strategy():
    tn = tnconv.networks.kfac_reduce((2, 3, 8), 3)
    x = torch.randn(2, 3, 8)
    run = bind(tn)
    run({"x": x})
    run({"x": x})  # (the inner runner of J, bound inside the square runner, resolves here)
    hits, misses = _memo().hits, _memo().misses
    run({"x": x})
    assert (_memo().hits, _memo().misses) == (hits, misses)  # no look-up at all
    native = _REGISTRY["native"]
    register_strategy(
        "native", native.run, native.description, priority=native.priority, fuses_bias=True, bind=native.bind
    )
    assert _memo().size == 0
    torch.testing.assert_close(run({"x": x}), contract(tn, {"x": x}, strategy="einsum"))
    assert _AUTO.get(tn)[0]  # resolved again through "auto" (and remembered there)


@pytest.mark.parametrize("front_end", ["conv", "conv_transpose"])
def test_a_remembered_signature_lets_no_bad_call_through(front_end):
    # the front-ends' fast path checks types in a few comparisons and leaves shapes to the
    # cached network builder: a signature seen before must still reject what it rejected
    call = getattr(tnconv, front_end)
    x, w, b = torch.randn(2, 4, 6, 6), torch.randn(4, 4, 3, 3), torch.randn(4)
    expected = call(x, w, b, stride=1)  # remembered from here on
    torch.testing.assert_close(call(x, w, b, stride=1), expected, rtol=0, atol=0)
    bad = [
        (dict(stride=True), TypeError, "stride"),
        (dict(bias=torch.randn(3)), ValueError, "bias"),
        (dict(bias=torch.randn(4, dtype=torch.float64)), TypeError, "bias"),
        (dict(bias=[0.0] * 4), TypeError, "bias"),
        (dict(weight=w.double()), TypeError, "weight"),
        (dict(weight=w[:3, :3] if front_end == "conv_transpose" else w[:, :3], bias=None), ValueError, "weight"),
    ]
    for change, error, name in bad:
        arguments = dict(weight=w, bias=b, stride=1) | change
        weight, bias = arguments.pop("weight"), arguments.pop("bias")
        with pytest.raises(error, match=name):
            call(x, weight, bias, **arguments)
