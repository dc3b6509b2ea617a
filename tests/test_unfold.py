import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.simplify import merge_identities

from .strategies import conv_cases, conv_transpose_cases
from .transpose_reference import TORCH_CONV_TRANSPOSE, conv_transpose_reference, unfold_reference


def rel_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def unfold_kwargs(case):
    return dict(kernel_size=case.kernel_size, dilation=case.dilation, padding=case.padding_tuple, stride=case.stride)


def windows(case):
    return tuple(
        (i + 2 * p - dl * (k - 1) - 1) // s + 1
        for i, p, dl, k, s in zip(case.input_size, case.padding_tuple, case.dilation, case.kernel_size, case.stride)
    )


@given(case=conv_cases(dims=2, allow_same=False))
def test_unfold_and_fold_match_torch_2d(case):
    x, _, _ = case.tensors()
    kw = unfold_kwargs(case)
    expected = F.unfold(x, **kw)
    assert rel_err(tnconv.unfold(x, **kw), expected) < 1e-12
    u = torch.randn_like(expected)
    assert rel_err(tnconv.fold(u, case.input_size, **kw), F.fold(u, case.input_size, **kw)) < 1e-12


@given(case=conv_cases(dims=st.integers(1, 4), max_size=5, allow_same=False))
def test_unfold_matches_one_hot_convolution(case):
    x, _, _ = case.tensors()
    expected = unfold_reference(x, case.kernel_size, case.stride, case.padding_tuple, case.dilation)
    assert rel_err(tnconv.unfold(x, **unfold_kwargs(case)), expected) < 1e-12


@given(case=conv_cases(dims=st.integers(1, 4), max_size=5, allow_same=False))
def test_fold_is_the_adjoint_of_unfold(case):
    x, _, _ = case.tensors()
    kw = unfold_kwargs(case)
    shape = (x.shape[0], x.shape[1] * math.prod(case.kernel_size), math.prod(windows(case)))
    u = torch.randn(shape, dtype=x.dtype)
    lhs = (tnconv.unfold(x, **kw) * u).sum()
    rhs = (x * tnconv.fold(u, case.input_size, **kw)).sum()
    assert abs(lhs - rhs) < 1e-10 * (x.norm() * u.norm())
    # and fold is the autograd adjoint of the one-hot-convolution reference
    xr = x.clone().requires_grad_()
    ref = unfold_reference(xr, case.kernel_size, case.stride, case.padding_tuple, case.dilation)
    (expected,) = torch.autograd.grad(ref, xr, u)
    assert rel_err(tnconv.fold(u, case.input_size, **kw), expected) < 1e-12


def test_unfold_and_fold_gradients():
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    kw = dict(kernel_size=(2, 3), dilation=(1, 1), padding=(1, 1), stride=(2, 1))
    assert torch.autograd.gradcheck(lambda x: tnconv.unfold(x, **kw), (x,), check_forward_ad=True)
    u = torch.randn(2, 12, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: tnconv.fold(u, (4, 3), **kw), (u,), check_forward_ad=True)
    y = tnconv.unfold(x, **kw)
    (g,) = torch.autograd.grad(y, x, u)
    assert rel_err(g, F.fold(u, (4, 3), **kw)) < 1e-12


@given(case=conv_transpose_cases(dims=st.integers(1, 3), groups=st.just(1)))
def test_unfold_transpose_times_weight_matrix_is_the_transposed_convolution(case):
    x, w, _ = case.tensors()
    kw = dict(
        kernel_size=case.kernel_size,
        stride=case.stride,
        padding=case.padding,
        output_padding=case.output_padding,
        dilation=case.dilation,
    )
    cols = tnconv.unfold_transpose(x, **kw)
    assert cols.shape == (x.shape[0], x.shape[1] * math.prod(case.kernel_size), math.prod(case.output_size))
    # w[ci, co, k] -> [co, (ci k)], matching the rows (ci k) of the unfolded input
    w_matrix = w.transpose(0, 1).flatten(1)
    y = (w_matrix @ cols).view(x.shape[0], -1, *case.output_size)
    assert rel_err(y, TORCH_CONV_TRANSPOSE[case.dims](x, w, **case.kwargs())) < 1e-10


@given(case=conv_transpose_cases(dims=4, max_size=3, groups=st.just(1)))
def test_unfold_transpose_four_dims(case):
    x, w, _ = case.tensors()
    c = case
    cols = tnconv.unfold_transpose(x, c.kernel_size, c.stride, c.padding, c.output_padding, c.dilation)
    y = (w.transpose(0, 1).flatten(1) @ cols).view(x.shape[0], -1, *case.output_size)
    expected = conv_transpose_reference(x, w, c.stride, c.padding, c.output_padding, c.dilation, 1)
    assert rel_err(y, expected) < 1e-10


def test_networks():
    unfold = tnconv.networks.unfold((2, 3, 6, 6), 3, padding=1)
    assert unfold.inputs == ("x",) and unfold.output_shape == (2, 27, 36)
    fold = tnconv.networks.fold((2, 27, 36), (6, 6), 3, padding=1)
    assert fold == merge_identities(unfold.vjp("x", vector="u"))
    assert fold.output_shape == (2, 3, 6, 6)
    ut = tnconv.networks.unfold_transpose((2, 3, 4), 3, stride=2, output_padding=1)
    assert ut.output_shape == (2, 9, 10)
    assert ut.node("x").axes == (("n",), ("c",), ("o1",))


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (((3, 2),), dict(padding=(1, 0), stride=(1, 2))),
        ((2,), dict(dilation=2)),
    ],
)
def test_modules_match_torch(args, kwargs):
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    ref, mine = torch.nn.Unfold(*args, **kwargs), tnconv.nn.Unfold(*args, **kwargs)
    assert repr(mine).endswith(repr(ref)[len("Unfold") :])
    u = ref(x)
    torch.testing.assert_close(mine(x), u, rtol=1e-12, atol=0)
    torch.testing.assert_close(mine(x[0]) if isinstance(args[0], tuple) else mine(x)[0], u[0], rtol=1e-12, atol=0)
    fold_ref, fold_mine = torch.nn.Fold((7, 6), *args, **kwargs), tnconv.nn.Fold((7, 6), *args, **kwargs)
    torch.testing.assert_close(fold_mine(u), fold_ref(u), rtol=1e-12, atol=0)
    torch.testing.assert_close(fold_mine(u[0]), fold_ref(u[0]), rtol=1e-12, atol=0)


def test_modules_any_dims():
    x = torch.randn(1, 2, 4, 3, 4, 3, dtype=torch.float64)
    u = tnconv.nn.Unfold((2, 2, 2, 2), stride=(2, 1, 2, 1))(x)
    assert rel_err(u, unfold_reference(x, (2, 2, 2, 2), (2, 1, 2, 1), (0,) * 4, (1,) * 4)) < 1e-12
    back = tnconv.nn.Fold((4, 3, 4, 3), 2, stride=(2, 1, 2, 1))(u)
    assert back.shape == x.shape


X = torch.randn(2, 3, 6, 6)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: tnconv.unfold(X, (3, 3, 3, 3, 3)), ValueError, "input must have shape"),
        (lambda: tnconv.unfold(X, 3, stride=(1, 2, 1, 1, 1)), ValueError, "input must have shape"),
        (lambda: tnconv.unfold(X, 7), ValueError, "larger than the padded input"),
        (lambda: tnconv.unfold(X, 3, stride=0), ValueError, "stride must be positive"),
        (lambda: tnconv.unfold(X, 3, dilation=(1, 3)), ValueError, "kernel_size=.*larger"),
        (lambda: tnconv.unfold(X, (3, 3), dilation=(1, 2, 1)), ValueError, "dilation must be an int or a tuple of 2"),
        (lambda: tnconv.unfold(X.tolist(), 3), TypeError, "input must be a torch.Tensor"),
        (lambda: tnconv.fold(torch.randn(2, 27, 16), (6, 6, 6), 3), ValueError, "columns but output_size"),
        (lambda: tnconv.fold(torch.randn(2, 27, 15), (6, 6), 3), ValueError, "15 columns but output_size"),
        (lambda: tnconv.fold(torch.randn(2, 26, 16), (6, 6), 3), ValueError, "not a multiple of prod"),
        (
            lambda: tnconv.fold(torch.randn(2, 27, 16), (6, 6), (3, 3, 3)),
            ValueError,
            "output_size must be an int or a tuple of 3",
        ),
        (lambda: tnconv.fold(torch.randn(2, 27, 16), (6, 6), 3, stride=(1, 1, 1)), ValueError, "output_size must be"),
        (lambda: tnconv.fold(torch.randn(2, 27, 16), 0, 3), ValueError, "output_size must be positive"),
        (lambda: tnconv.fold(torch.randn(2, 1, 27, 16), (6, 6), 3), ValueError, "input must have shape"),
        (lambda: tnconv.unfold_transpose(X, 3, stride=2, output_padding=2), ValueError, "output_padding"),
        (lambda: tnconv.unfold_transpose(X, 3, output_padding=(0, 0, 1)), ValueError, "output_padding"),
        (lambda: tnconv.unfold_transpose(X, 3, padding="same"), ValueError, "padding"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
