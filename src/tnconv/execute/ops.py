"""tnconv's operations as ``torch.library`` custom operators, for ``torch.compile``, ``torch.export``
and ``torch.jit.trace``.

Each evaluated operation is one opaque operator ``tnconv::<name>`` whose arguments are
tensors, int lists and strings: the compiler sees one node per convolution (no graph
breaks, nothing of tnconv's Python traced), the symbolic work (validation, the network, its
plan) happens *inside* the operator, once per signature, from tnconv's caches. Each
operator has

- a fake ("meta") implementation that gives the output's shape and dtype (validating the
  arguments, so a bad call fails while tracing);
- an autograd registration whose backward calls the other operators: the set
  ``conv, conv_input_vjp, conv_weight_vjp, conv_transpose`` and the pair ``unfold, fold``
  are closed under differentiation (docs/reference.md §4: the VJP of a multilinear network
  is another such network), so compiled backward passes — and double backward — stay in
  the same operators. For complex tensors the VJPs contract the conjugates of the other
  operands, as torch's convention (``grad = Jᴴ·v``) asks.

The front-ends (:mod:`tnconv.functional`) call these operators only while compiling,
exporting or tracing (:func:`tracing`); eager calls keep the autograd function of
:mod:`tnconv.execute.autodiff`, which also serves ``torch.func`` and forward-mode AD.

Example:
    >>> import torch
    >>> from tnconv.execute import ops
    >>> x, w = torch.randn(2, 3, 8), torch.randn(4, 3, 3)
    >>> y = torch.ops.tnconv.conv(x, w, None, [1], [0], "", [1], 1, "auto")
    >>> torch.allclose(y, torch.nn.functional.conv1d(x, w), atol=1e-5)
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from ..spec.convspec import ConvSpec
from ..spec.validation import UNSUPPORTED_DTYPES, check_bias
from ..symbolic.builders.conv import conv_network
from ..symbolic.builders.transpose import conv_transpose_network
from ..symbolic.builders.unfold import fold_network, unfold_network, unfold_transpose_network
from ..symbolic.derive import vjp_network
from .autodiff import complex_safe
from .dispatch import contract as _dispatch

Tensor = torch.Tensor


def dispatch(network, tensors, strategy, bias=None):  # type: ignore[no-untyped-def]
    """The dispatcher, with :func:`~tnconv.execute.autodiff.complex_safe`'s strategy."""
    return _dispatch(network, tensors, complex_safe(strategy, tensors.values()), bias=bias)


def tracing() -> bool:
    """Whether the caller is being compiled, exported or ``torch.jit``-traced (then the
    front-ends call the custom operators)."""
    return torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None


def plain_call(input: object, weight: object, bias: object, strategy: object) -> bool:
    """Whether a front-end call (:func:`tnconv.conv`, :func:`tnconv.conv_transpose`) needs
    none of its slow path: ``"auto"``, batched real tensors of one supported dtype and device
    (a bias too), no autocast, not :func:`tracing`. The front-end then checks the bias's
    shape and leaves the shapes and hyper-parameters to its network builder, which checks
    them once per signature: the full checks cost as much as a small layer's GEMM."""
    return (
        strategy == "auto"
        and isinstance(input, torch.Tensor)
        and isinstance(weight, torch.Tensor)
        and input.dim() == weight.dim() >= 3
        and input.dtype == weight.dtype
        and input.device == weight.device
        and (
            bias is None
            or (isinstance(bias, torch.Tensor) and bias.dtype == input.dtype and bias.device == input.device)
        )
        and input.dtype not in UNSUPPORTED_DTYPES
        and not input.is_complex()
        and not torch._C._is_any_autocast_enabled()
        and not tracing()
    )


def _padding(padding: Sequence[int], name: str) -> object:
    """The user's ``padding`` back from the operator's ``(list, name)`` encoding."""
    return name if name else tuple(padding)


def _own(result: Tensor, *inputs: Tensor | None) -> Tensor:
    """``result`` as a contiguous tensor of its own: copied if it shares memory with an input
    (an operator must not return an alias of its inputs) and made contiguous (the layout the
    fake implementations promise; a strategy may return a strided view)."""
    result = result.contiguous()
    pointer = result.untyped_storage().data_ptr()
    for tensor in inputs:
        if tensor is not None and tensor.untyped_storage().data_ptr() == pointer:
            return result.clone()
    return result


def _conj(tensor: Tensor) -> Tensor:
    return tensor.conj().resolve_conj() if tensor.is_complex() else tensor


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


# ------------------------------------------------------------------ conv
def _conv_net(x_shape, w_shape, stride, padding, padding_name, dilation, groups):  # type: ignore[no-untyped-def]
    return conv_network(x_shape, w_shape, tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)


@torch.library.custom_op("tnconv::conv", mutates_args=())
def conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    strategy: str,
) -> Tensor:
    """:func:`tnconv.conv` (``padding_name`` is ``"same"``/``"valid"`` or ``""`` for ``padding``)."""
    network = _conv_net(_shape(input), _shape(weight), stride, padding, padding_name, dilation, groups)
    check_bias(bias, network.output_shape[1])
    return _own(dispatch(network, {"x": input, "w": weight}, strategy, bias=bias), input, weight, bias)


@conv.register_fake
def _(input, weight, bias, stride, padding, padding_name, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    network = _conv_net(_shape(input), _shape(weight), stride, padding, padding_name, dilation, groups)
    check_bias(bias, network.output_shape[1])
    return input.new_empty(network.output_shape)


@torch.library.custom_op("tnconv::conv_input_vjp", mutates_args=())
def conv_input_vjp(
    weight: Tensor,
    v: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    strategy: str,
) -> Tensor:
    """:func:`tnconv.conv_input_vjp` for ``v`` without leading dimensions; ``input_size`` is
    the full ``[N, C_in, I…]``."""
    network = _conv_net(tuple(input_size), _shape(weight), stride, padding, padding_name, dilation, groups)
    derived = vjp_network(network, "x")[0]
    return _own(dispatch(derived, {"w": weight, "v": v}, strategy), weight, v)


@conv_input_vjp.register_fake
def _(weight, v, input_size, stride, padding, padding_name, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    network = _conv_net(tuple(input_size), _shape(weight), stride, padding, padding_name, dilation, groups)
    if _shape(v) != network.output_shape:
        raise ValueError(f"v must have shape {network.output_shape}, got {_shape(v)}")
    return v.new_empty(tuple(input_size))


@torch.library.custom_op("tnconv::conv_weight_vjp", mutates_args=())
def conv_weight_vjp(
    input: Tensor,
    v: Tensor,
    weight_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    strategy: str,
) -> Tensor:
    """:func:`tnconv.conv_weight_vjp` for ``v`` without leading dimensions; ``weight_size`` is
    the full ``[C_out, C_in/G, K…]``."""
    network = _conv_net(_shape(input), tuple(weight_size), stride, padding, padding_name, dilation, groups)
    derived = vjp_network(network, "w")[0]
    return _own(dispatch(derived, {"x": input, "v": v}, strategy), input, v)


@conv_weight_vjp.register_fake
def _(input, v, weight_size, stride, padding, padding_name, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    network = _conv_net(_shape(input), tuple(weight_size), stride, padding, padding_name, dilation, groups)
    if _shape(v) != network.output_shape:
        raise ValueError(f"v must have shape {network.output_shape}, got {_shape(v)}")
    return v.new_empty(tuple(weight_size))


def _conv_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    first, second, *rest = inputs
    ctx.save_for_backward(first, second)
    ctx.rest = rest


def _conv_backward(ctx, grad):  # type: ignore[no-untyped-def]
    x, w = ctx.saved_tensors
    bias, stride, padding, name, dilation, groups, strategy = ctx.rest
    options = (stride, padding, name, dilation, groups, strategy)
    gx = conv_input_vjp(_conj(w), grad, list(x.shape), *options) if ctx.needs_input_grad[0] else None
    gw = conv_weight_vjp(_conj(x), grad, list(w.shape), *options) if ctx.needs_input_grad[1] else None
    gb = grad.sum([0, *range(2, grad.dim())]) if bias is not None and ctx.needs_input_grad[2] else None
    return gx, gw, gb, None, None, None, None, None, None


def _input_vjp_backward(ctx, grad):  # type: ignore[no-untyped-def]
    # out = Jₓᵀ v:  <out, g> = <v, conv(g, w)>
    w, v = ctx.saved_tensors
    stride, padding, name, dilation, groups, strategy = ctx.rest[1:]
    options = (stride, padding, name, dilation, groups, strategy)
    gw = conv_weight_vjp(grad, _conj(v), list(w.shape), *options) if ctx.needs_input_grad[0] else None
    gv = conv(grad, _conj(w), None, *options) if ctx.needs_input_grad[1] else None
    return gw, gv, None, None, None, None, None, None, None


def _weight_vjp_backward(ctx, grad):  # type: ignore[no-untyped-def]
    # out = J_wᵀ v:  <out, g> = <v, conv(x, g)>
    x, v = ctx.saved_tensors
    stride, padding, name, dilation, groups, strategy = ctx.rest[1:]
    options = (stride, padding, name, dilation, groups, strategy)
    gx = conv_input_vjp(grad, _conj(v), list(x.shape), *options) if ctx.needs_input_grad[0] else None
    gv = conv(_conj(x), grad, None, *options) if ctx.needs_input_grad[1] else None
    return gx, gv, None, None, None, None, None, None, None


conv.register_autograd(_conv_backward, setup_context=_conv_setup)
conv_input_vjp.register_autograd(_input_vjp_backward, setup_context=_conv_setup)
conv_weight_vjp.register_autograd(_weight_vjp_backward, setup_context=_conv_setup)


# ------------------------------------------------------------------ transposed conv
@torch.library.custom_op("tnconv::conv_transpose", mutates_args=())
def conv_transpose(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    strategy: str,
) -> Tensor:
    """:func:`tnconv.conv_transpose` (torch's argument order)."""
    network = conv_transpose_network(
        _shape(input), _shape(weight), tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)
    )
    check_bias(bias, network.output_shape[1])
    return _own(dispatch(network, {"x": input, "w": weight}, strategy, bias=bias), input, weight, bias)


@conv_transpose.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation, strategy):  # type: ignore[no-untyped-def]
    spec = ConvSpec.conv_transpose(
        _shape(input), _shape(weight), tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)
    )
    check_bias(bias, spec.output_shape[1])
    return input.new_empty(spec.output_shape)


def _transpose_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, w, bias, stride, padding, _output_padding, groups, dilation, strategy = inputs
    ctx.save_for_backward(x, w)
    ctx.has_bias = bias is not None
    ctx.options = (stride, padding, "", dilation, groups, strategy)


def _transpose_backward(ctx, grad):  # type: ignore[no-untyped-def]
    # conv_transpose(x, w) = conv_input_vjp(w, x):  <y, g> = <x, conv(g, w)>
    x, w = ctx.saved_tensors
    gx = conv(grad, _conj(w), None, *ctx.options) if ctx.needs_input_grad[0] else None
    gw = conv_weight_vjp(grad, _conj(x), list(w.shape), *ctx.options) if ctx.needs_input_grad[1] else None
    gb = grad.sum([0, *range(2, grad.dim())]) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb, None, None, None, None, None, None


conv_transpose.register_autograd(_transpose_backward, setup_context=_transpose_setup)


# ------------------------------------------------------------------ unfold / fold
@torch.library.custom_op("tnconv::unfold", mutates_args=())
def unfold(
    input: Tensor,
    kernel_size: list[int],
    dilation: list[int],
    padding: list[int],
    padding_name: str,
    stride: list[int],
    strategy: str,
) -> Tensor:
    """:func:`tnconv.unfold` of a batched ``[N, C, I…]`` input."""
    network = unfold_network(
        _shape(input), tuple(kernel_size), tuple(dilation), _padding(padding, padding_name), tuple(stride)
    )
    return _own(dispatch(network, {"x": input}, strategy), input)


@unfold.register_fake
def _(input, kernel_size, dilation, padding, padding_name, stride, strategy):  # type: ignore[no-untyped-def]
    network = unfold_network(
        _shape(input), tuple(kernel_size), tuple(dilation), _padding(padding, padding_name), tuple(stride)
    )
    return input.new_empty(network.output_shape)


@torch.library.custom_op("tnconv::fold", mutates_args=())
def fold(
    input: Tensor,
    output_size: list[int],
    kernel_size: list[int],
    dilation: list[int],
    padding: list[int],
    padding_name: str,
    stride: list[int],
    strategy: str,
) -> Tensor:
    """:func:`tnconv.fold` of a batched ``[N, C·∏K, L]`` input."""
    network = fold_network(
        _shape(input),
        tuple(output_size),
        tuple(kernel_size),
        tuple(dilation),
        _padding(padding, padding_name),
        tuple(stride),
    )
    return _own(dispatch(network, {"u": input}, strategy), input)


@fold.register_fake
def _(input, output_size, kernel_size, dilation, padding, padding_name, stride, strategy):  # type: ignore[no-untyped-def]
    network = fold_network(
        _shape(input),
        tuple(output_size),
        tuple(kernel_size),
        tuple(dilation),
        _padding(padding, padding_name),
        tuple(stride),
    )
    return input.new_empty(network.output_shape)


def _unfold_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.input_shape = tuple(inputs[0].shape)
    ctx.arguments = inputs[1:]


def _unfold_backward(ctx, grad):  # type: ignore[no-untyped-def]
    kernel, dilation, padding, name, stride, strategy = ctx.arguments
    out = fold(grad, list(ctx.input_shape[2:]), kernel, dilation, padding, name, stride, strategy)
    return out, None, None, None, None, None, None


def _fold_backward(ctx, grad):  # type: ignore[no-untyped-def]
    _size, kernel, dilation, padding, name, stride, strategy = ctx.arguments
    return unfold(grad, kernel, dilation, padding, name, stride, strategy), None, None, None, None, None, None, None


unfold.register_autograd(_unfold_backward, setup_context=_unfold_setup)
fold.register_autograd(_fold_backward, setup_context=_unfold_setup)


# ------------------------------------------------------------------ unfold_transpose and its adjoint
def _unfold_transpose_net(shape, kernel_size, stride, padding, output_padding, dilation):  # type: ignore[no-untyped-def]
    return unfold_transpose_network(
        shape, tuple(kernel_size), tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation)
    )


@torch.library.custom_op("tnconv::unfold_transpose", mutates_args=())
def unfold_transpose(
    input: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    strategy: str,
) -> Tensor:
    """:func:`tnconv.unfold_transpose` of a batched ``[N, C, O…]`` input."""
    network = _unfold_transpose_net(_shape(input), kernel_size, stride, padding, output_padding, dilation)
    return _own(dispatch(network, {"x": input}, strategy), input)


@unfold_transpose.register_fake
def _(input, kernel_size, stride, padding, output_padding, dilation, strategy):  # type: ignore[no-untyped-def]
    network = _unfold_transpose_net(_shape(input), kernel_size, stride, padding, output_padding, dilation)
    return input.new_empty(network.output_shape)


@torch.library.custom_op("tnconv::unfold_transpose_vjp", mutates_args=())
def unfold_transpose_vjp(
    grad: Tensor,
    input_size: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    strategy: str,
) -> Tensor:
    """The adjoint of ``tnconv::unfold_transpose``: ``grad [N, C·∏K, ∏I']`` back to the input
    ``input_size = [N, C, O…]`` (the VJP network of its network; Π is real, so complex
    tensors need no conjugate)."""
    network = _unfold_transpose_adjoint_net(grad, input_size, kernel_size, stride, padding, output_padding, dilation)
    adjoint, vector = vjp_network(network, "x")
    return _own(dispatch(adjoint, {vector: grad}, strategy), grad)


def _unfold_transpose_adjoint_net(grad, input_size, kernel_size, stride, padding, output_padding, dilation):  # type: ignore[no-untyped-def]
    network = _unfold_transpose_net(tuple(input_size), kernel_size, stride, padding, output_padding, dilation)
    if _shape(grad) != tuple(network.output_shape):
        raise ValueError(f"grad must have shape {tuple(network.output_shape)}, got {_shape(grad)}")
    return network


@unfold_transpose_vjp.register_fake
def _(grad, input_size, kernel_size, stride, padding, output_padding, dilation, strategy):  # type: ignore[no-untyped-def]
    _unfold_transpose_adjoint_net(grad, input_size, kernel_size, stride, padding, output_padding, dilation)
    return grad.new_empty(tuple(input_size))


def _unfold_transpose_backward(ctx, grad):  # type: ignore[no-untyped-def]
    return unfold_transpose_vjp(grad, list(ctx.input_shape), *ctx.arguments), None, None, None, None, None, None


def _unfold_transpose_vjp_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.arguments = inputs[2:]


def _unfold_transpose_vjp_backward(ctx, grad):  # type: ignore[no-untyped-def]
    return (unfold_transpose(grad, *ctx.arguments), *[None] * 7)


unfold_transpose.register_autograd(_unfold_transpose_backward, setup_context=_unfold_setup)
unfold_transpose_vjp.register_autograd(_unfold_transpose_vjp_backward, setup_context=_unfold_transpose_vjp_setup)


# ------------------------------------------------------------------ front-end helpers
def int_list(value: object, dims: int) -> list[int]:
    """An int or a sequence of ints as the ``int[]`` of an operator (an int repeated ``dims``
    times; anything else is passed through for the operator's validation to reject)."""
    if isinstance(value, (tuple, list, torch.Size)):
        return list(value)
    return [value] * dims  # type: ignore[list-item]


def padding_arguments(padding: object, dims: int) -> tuple[list[int], str]:
    """``padding`` (an int, ints, ``'same'`` or ``'valid'``) as the operators' ``(padding, padding_name)``."""
    if isinstance(padding, str):
        return [0] * dims, padding
    return int_list(padding, dims), ""


def leading(shape: Sequence[int], trailing: int) -> tuple[tuple[int, ...], int]:
    """The extra leading dimensions of ``shape`` before its last ``trailing`` and their product."""
    lead = tuple(shape[: len(shape) - trailing])
    return lead, math.prod(lead)


# ------------------------------------------------------------------ curvature (registered in tnconv.functional)
def traced_input_factor(
    x: Tensor,
    approx: str,
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: int,
    bias: bool,
    output_padding: object = None,
) -> Tensor:
    """The KFAC input factors as ``torch.ops.tnconv.input_factor`` (or ``input_factor_transpose``
    when ``output_padding`` is given), for the front-ends while compiling or tracing.

    The operators are registered by :mod:`tnconv.functional.curvature_ops` (a layer above,
    since their implementation is the eager front-end); they are looked up by name here.
    """
    dims = x.dim() - 2
    kernel, strides, dilations = (int_list(a, dims) for a in (kernel_size, stride, dilation))
    if output_padding is None:
        pads, name = padding_arguments(padding, dims)
        return torch.ops.tnconv.input_factor(x, approx, kernel, strides, pads, name, dilations, groups, bias)
    return torch.ops.tnconv.input_factor_transpose(
        x, approx, kernel, strides, int_list(padding, dims), int_list(output_padding, dims), dilations, groups, bias
    )


def traced_weight_statistic(
    x: Tensor,
    v: Tensor,
    statistic: str,
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: int,
) -> Tensor:
    """The weight statistics (``"per_sample_weight_grad"``, ``"grad_second_moment"``,
    ``"ggn_diagonal"``, ``"ggn_gram"``) as ``torch.ops.tnconv.weight_statistic``, for the
    front-ends while compiling or tracing (registered by :mod:`tnconv.functional.curvature_ops`)."""
    dims = x.dim() - 2
    kernel, strides, dilations = (int_list(a, dims) for a in (kernel_size, stride, dilation))
    pads, name = padding_arguments(padding, dims)
    return torch.ops.tnconv.weight_statistic(x, v, statistic, kernel, strides, pads, name, dilations, groups)


def float32_under_autocast(function):  # type: ignore[no-untyped-def]
    """Decorator for the curvature front-ends: under ``torch.autocast`` the factor accumulates
    in ``float32`` (a half-precision ``x`` is upcast and autocast is off inside); outside
    autocast it has ``x``'s dtype, so a ``bfloat16`` factor is asked for with a ``bfloat16`` ``x``.

    >>> import torch, tnconv
    >>> with torch.autocast("cpu", torch.bfloat16):
    ...     tnconv.kfc_factor(torch.randn(2, 3, 6).bfloat16(), 3).dtype
    torch.float32
    """

    @functools.wraps(function)
    def wrapper(x, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(x, Tensor) and x.is_floating_point():
            device = x.device.type
            if device in ("cpu", "cuda", "xpu", "mps", "hpu") and torch.is_autocast_enabled(device):
                with torch.autocast(device, enabled=False):
                    upcast = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
                    return function(upcast, *args, **kwargs)
        return function(x, *args, **kwargs)

    return wrapper
