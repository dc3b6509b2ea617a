"""Randomized backpropagation as ``torch.library`` custom operators, for ``torch.compile``,
``torch.export`` and ``torch.jit.trace`` (the exact operations are in :mod:`tnconv.execute.ops`).

A randomized VJP's kept subset depends on a random draw, and its index sets shape the
computation, so the draw cannot be traced. Instead the randomness is a *seed*:

1. one ``int64`` seed is drawn per call — per forward of a randomized convolution (module
   with ``backward_keep < 1`` or :func:`tnconv.randomized.conv`), per call of a randomized
   VJP — from the ``generator`` given, or from torch's global CPU generator when it is
   ``None`` (:func:`draw`: ``torch.randint(0, 2**63 - 1, ())``, one step of that generator);
2. the estimators then draw their subsets from a fresh ``torch.Generator`` on the tensors'
   device seeded with it (:func:`seeded`); a convolution's backward draws the input VJP's
   subset first, then the weight VJP's, from that one generator.

Eager calls and compiled/traced graphs follow the same two steps, so a compiled model
gives *the same* gradients as the eager model for the same generator state (the same
``torch.manual_seed``). Under compilation step 1 is the operator ``tnconv::draw_seed``
(tagged ``nondeterministic_seeded``: never merged or recomputed, run once per call of the
graph), which reads the generator at run time; step 2 is inside the operators below, which
are pure functions of their inputs and the seed (``torch.library.opcheck`` holds):

- ``tnconv::randomized_conv`` / ``tnconv::randomized_conv_transpose``: the exact forward,
  whose autograd formula calls ``tnconv::randomized_conv_backward`` (both gradients from one
  seed) or, for the transposed convolution, the exact ``tnconv::conv`` and
  ``tnconv::randomized_conv_transpose_weight_vjp``;
- ``tnconv::randomized_conv_weight_vjp``, ``tnconv::randomized_conv_input_vjp``,
  ``tnconv::randomized_conv_transpose_weight_vjp``: the functional estimators.

The output of each has the static shape of the weight or the input, so the fake
implementations only validate the arguments and allocate. A user generator enters a graph
as a constant key (dynamo recompiles for another generator object); tnconv keeps a reference
to each generator that has been traced. A graph exported with a user generator is therefore
tied to this process; with the global generator it is portable.

Example (the same seed gives the same estimate; ``torch.compile(layer)`` would give it too):
    >>> import torch, tnconv
    >>> layer = tnconv.nn.Conv2d(2, 3, 3, backward_keep=0.5, backward_mode="fixed")
    >>> x = torch.randn(8, 2, 8, 8)
    >>> def weight_grad(seed):
    ...     _ = torch.manual_seed(seed)
    ...     return torch.autograd.grad(layer(x).sum(), layer.weight)[0]
    >>> torch.equal(weight_grad(0), weight_grad(0)), torch.equal(weight_grad(0), weight_grad(1))
    (True, False)
"""

from __future__ import annotations

import functools

import torch

from ..execute.ops import _own, int_list, padding_arguments, tracing
from ..execute.ops import conv as exact_conv_op
from ..functional.conv import conv as exact_conv
from ..functional.transpose import conv_transpose as exact_conv_transpose
from ..spec.convspec import ConvSpec
from ..spec.validation import IntOrTuple, Padding, check_bias, check_generator, check_tensor
from ..symbolic.builders.conv import conv_network
from . import estimators
from .sampling import check_keep, check_leg, check_mode

Tensor = torch.Tensor

#: Seeds are drawn uniformly from ``[0, SEED_HIGH)``.
SEED_HIGH = 2**63 - 1

_GENERATORS: dict[int, torch.Generator] = {}


# ------------------------------------------------------------------ the seed
def draw(generator: torch.Generator | None) -> Tensor:
    """One seed, a CPU ``int64`` scalar, from ``generator`` (torch's global CPU generator if ``None``).

    >>> int(draw(torch.Generator().manual_seed(0))) == int(draw(torch.Generator().manual_seed(0)))
    True
    """
    device = generator.device if generator is not None else torch.device("cpu")
    with torch._C._DisableFuncTorch():  # shared by vmapped examples, like the draws themselves
        return torch.randint(0, SEED_HIGH, (), generator=generator, device=device, dtype=torch.int64).cpu()


def seeded(seed: Tensor | int, device: torch.device) -> torch.Generator:
    """A fresh generator on ``device``'s type seeded with ``seed``: the estimators' draws come from it."""
    return torch.Generator(device=device.type).manual_seed(int(seed))


@torch._dynamo.assume_constant_result
def generator_key(generator: torch.Generator | None) -> int:
    """The constant that stands for ``generator`` in a graph (``0``: the global generator)."""
    if generator is None:
        return 0
    _GENERATORS[id(generator)] = generator
    return id(generator)


@torch.library.custom_op("tnconv::draw_seed", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def draw_seed(after: Tensor, generator: int) -> Tensor:
    """:func:`draw` from the generator of key ``generator`` (``after`` only orders the draw:
    it is taken when ``after`` exists, as in eager execution)."""
    if generator and generator not in _GENERATORS:
        raise ValueError(f"generator key {generator} is not a generator tnconv has traced in this process")
    return draw(_GENERATORS.get(generator) if generator else None)


@draw_seed.register_fake
def _(after, generator):  # type: ignore[no-untyped-def]
    return torch.empty((), dtype=torch.int64, device="cpu")


def seed_for(generator: object, after: Tensor, name: str = "input") -> Tensor:
    """The seed of one randomized call: ``generator`` validated (a ``torch.Generator`` on
    ``after``'s device type, or ``None``), then :func:`draw` — as ``tnconv::draw_seed`` while
    compiling or tracing. A complex ``after`` (named ``name``) is a ``TypeError``: the
    estimators run on torch's real-only VJP kernels."""
    if after.is_complex():
        raise TypeError(f"{name} is complex ({after.dtype}): randomized backpropagation supports real tensors only")
    check_generator(generator, after.device)
    if tracing():
        return torch.ops.tnconv.draw_seed(after, generator_key(generator))  # type: ignore[arg-type]
    return draw(generator)  # type: ignore[arg-type]


def _padding(padding: list[int], name: str) -> object:
    return name if name else tuple(padding)


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape)


def _options(keep: float, leg: str, mode: str, kind: str, dims: int) -> None:
    if not isinstance(keep, torch.SymFloat):  # a symbolic keep (dynamo made it dynamic) is checked at run time
        check_keep(keep)
    check_leg(leg, kind, dims)
    check_mode(mode)


# ------------------------------------------------------------------ functional estimators
@torch.library.custom_op("tnconv::randomized_conv_weight_vjp", mutates_args=())
def randomized_conv_weight_vjp(
    x: Tensor,
    v: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    keep: float,
    leg: str,
    mode: str,
    seed: Tensor,
) -> Tensor:
    """:func:`tnconv.randomized.estimators.conv_weight_vjp` with the draws of :func:`seeded` ``(seed)``."""
    result = estimators.conv_weight_vjp(
        x,
        v,
        tuple(kernel_size),
        tuple(stride),
        _padding(padding, padding_name),
        tuple(dilation),
        groups,
        keep=keep,
        leg=leg,
        mode=mode,
        generator=seeded(seed, x.device),
    )
    return _own(result, x, v)


def _checked_output_shape(network, v_shape):  # type: ignore[no-untyped-def]
    """The VJP's output shape, after checking that ``v`` has the convolution's output shape."""
    if network.input_shape("v") != tuple(v_shape):
        raise ValueError(f"v must have the convolution's output shape {network.input_shape('v')}, got {tuple(v_shape)}")
    return network.output_shape


def _weight_vjp_shape(x_shape, v_shape, kernel, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    network = estimators.weight_vjp_network(
        x_shape, v_shape, tuple(kernel), tuple(stride), padding, tuple(dilation), groups
    )
    return _checked_output_shape(network, v_shape)


@randomized_conv_weight_vjp.register_fake
def _(x, v, kernel_size, stride, padding, padding_name, dilation, groups, keep, leg, mode, seed):  # type: ignore[no-untyped-def]
    _options(keep, leg, mode, "weight", x.dim() - 2)
    shape = _weight_vjp_shape(
        _shape(x), _shape(v), kernel_size, stride, _padding(padding, padding_name), dilation, groups
    )
    return x.new_empty(shape)


@torch.library.custom_op("tnconv::randomized_conv_input_vjp", mutates_args=())
def randomized_conv_input_vjp(
    weight: Tensor,
    v: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    keep: float,
    leg: str,
    mode: str,
    seed: Tensor,
) -> Tensor:
    """:func:`tnconv.randomized.estimators.conv_input_vjp` with the draws of :func:`seeded` ``(seed)``."""
    result = estimators.conv_input_vjp(
        weight,
        v,
        tuple(input_size),
        tuple(stride),
        _padding(padding, padding_name),
        tuple(dilation),
        groups,
        keep=keep,
        leg=leg,
        mode=mode,
        generator=seeded(seed, v.device),
    )
    return _own(result, weight, v)


def _input_vjp_shape(w_shape, v_shape, input_size, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    network = estimators.input_vjp_network(
        w_shape, v_shape, tuple(input_size), tuple(stride), padding, tuple(dilation), groups
    )
    return _checked_output_shape(network, v_shape)


@randomized_conv_input_vjp.register_fake
def _(weight, v, input_size, stride, padding, padding_name, dilation, groups, keep, leg, mode, seed):  # type: ignore[no-untyped-def]
    _options(keep, leg, mode, "input", weight.dim() - 2)
    shape = _input_vjp_shape(
        _shape(weight), _shape(v), input_size, stride, _padding(padding, padding_name), dilation, groups
    )
    return v.new_empty(shape)


@torch.library.custom_op("tnconv::randomized_conv_transpose_weight_vjp", mutates_args=())
def randomized_conv_transpose_weight_vjp(
    x: Tensor,
    v: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    keep: float,
    leg: str,
    mode: str,
    seed: Tensor,
) -> Tensor:
    """:func:`tnconv.randomized.estimators.conv_transpose_weight_vjp` with the draws of :func:`seeded` ``(seed)``."""
    result = estimators.conv_transpose_weight_vjp(
        x,
        v,
        tuple(kernel_size),
        tuple(stride),
        tuple(padding),
        tuple(output_padding),
        groups,
        tuple(dilation),
        keep=keep,
        leg=leg,
        mode=mode,
        generator=seeded(seed, x.device),
    )
    return _own(result, x, v)


@randomized_conv_transpose_weight_vjp.register_fake
def _(x, v, kernel_size, stride, padding, output_padding, groups, dilation, keep, leg, mode, seed):  # type: ignore[no-untyped-def]
    _options(keep, leg, mode, "weight", x.dim() - 2)
    ConvSpec.conv_transpose(
        _shape(x),
        (_shape(x)[1], _shape(v)[1] // max(groups, 1), *kernel_size),
        tuple(stride),
        tuple(padding),
        tuple(output_padding),
        groups,
        tuple(dilation),
    )  # validates output_padding against stride and dilation as the transposed convolution does
    shape = _weight_vjp_shape(_shape(v), _shape(x), kernel_size, stride, tuple(padding), dilation, groups)
    return x.new_empty(shape)


# ------------------------------------------------------------------ training: randomized_conv
@torch.library.custom_op("tnconv::randomized_conv", mutates_args=())
def randomized_conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    keep: float,
    leg: str,
    mode: str,
    input_keep: float,
    input_leg: str,
    seed: Tensor,
) -> Tensor:
    """:func:`tnconv.randomized.conv`: the exact convolution; the backward is
    ``tnconv::randomized_conv_backward`` with ``seed``."""
    padded = _padding(padding, padding_name)
    return _own(exact_conv(input, weight, bias, tuple(stride), padded, tuple(dilation), groups), input, weight, bias)


@randomized_conv.register_fake
def _(
    input, weight, bias, stride, padding, padding_name, dilation, groups, keep, leg, mode, input_keep, input_leg, seed
):  # type: ignore[no-untyped-def]
    dims = input.dim() - 2
    _options(keep, leg, mode, "weight", dims)
    _options(input_keep, input_leg, mode, "input", dims)
    network = conv_network(
        _shape(input), _shape(weight), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups
    )
    check_bias(bias, network.output_shape[1])
    return input.new_empty(network.output_shape)


@torch.library.custom_op("tnconv::randomized_conv_backward", mutates_args=())
def randomized_conv_backward(
    input: Tensor,
    weight: Tensor,
    grad: Tensor,
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    keep: float,
    leg: str,
    mode: str,
    input_keep: float,
    input_leg: str,
    seed: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor]:
    """The input and weight gradients of :func:`tnconv.randomized.conv` (an empty tensor where
    ``output_mask`` is false), both drawn from one :func:`seeded` ``(seed)`` generator: the
    input VJP's subset first, as the eager backward."""
    generator = seeded(seed, input.device)
    hyper = (tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)
    grad_input = grad_weight = None
    if output_mask[0]:
        grad_input = estimators.conv_input_vjp(
            weight, grad, input.shape, *hyper, keep=input_keep, leg=input_leg, mode=mode, generator=generator
        )
    if output_mask[1]:
        grad_weight = estimators.conv_weight_vjp(
            input, grad, weight.shape[2:], *hyper, keep=keep, leg=leg, mode=mode, generator=generator
        )
    grad_input = input.new_empty(0) if grad_input is None else _own(grad_input, input, weight, grad)
    grad_weight = weight.new_empty(0) if grad_weight is None else _own(grad_weight, input, weight, grad)
    return grad_input, grad_weight


@randomized_conv_backward.register_fake
def _(
    input,
    weight,
    grad,
    stride,
    padding,
    padding_name,
    dilation,
    groups,
    keep,
    leg,
    mode,
    input_keep,
    input_leg,
    seed,
    output_mask,
):  # type: ignore[no-untyped-def]
    network = conv_network(
        _shape(input), _shape(weight), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups
    )
    if _shape(grad) != network.output_shape:
        raise ValueError(f"grad must have the convolution's output shape {network.output_shape}, got {_shape(grad)}")
    grad_input = input.new_empty(input.shape if output_mask[0] else (0,), dtype=grad.dtype)
    grad_weight = weight.new_empty(weight.shape if output_mask[1] else (0,), dtype=grad.dtype)
    return grad_input, grad_weight


def _conv_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    input, weight, bias, *options, seed = inputs
    ctx.save_for_backward(input, weight, seed)
    ctx.has_bias = bias is not None
    ctx.options = options


def _conv_backward(ctx, grad):  # type: ignore[no-untyped-def]
    input, weight, seed = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1]]
    grad_input, grad_weight = randomized_conv_backward(input, weight, grad, *ctx.options, seed, mask)
    grad_bias = grad.sum([0, *range(2, grad.dim())]) if ctx.has_bias and ctx.needs_input_grad[2] else None
    nones = (None,) * len(ctx.options)
    return (grad_input if mask[0] else None, grad_weight if mask[1] else None, grad_bias, *nones, None)


randomized_conv.register_autograd(_conv_backward, setup_context=_conv_setup)


# ------------------------------------------------------------------ training: randomized_conv_transpose
@torch.library.custom_op("tnconv::randomized_conv_transpose", mutates_args=())
def randomized_conv_transpose(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    keep: float,
    leg: str,
    mode: str,
    seed: Tensor,
) -> Tensor:
    """:func:`tnconv.randomized.conv_transpose`: the exact transposed convolution; its weight
    gradient is ``tnconv::randomized_conv_transpose_weight_vjp`` with ``seed``."""
    result = exact_conv_transpose(
        input, weight, bias, tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)
    )
    return _own(result, input, weight, bias)


@randomized_conv_transpose.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation, keep, leg, mode, seed):  # type: ignore[no-untyped-def]
    _options(keep, leg, mode, "weight", input.dim() - 2)
    spec = ConvSpec.conv_transpose(
        _shape(input), _shape(weight), tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)
    )
    check_bias(bias, spec.output_shape[1])
    return input.new_empty(spec.output_shape)


def _transpose_setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    input, weight, bias, stride, padding, output_padding, groups, dilation, keep, leg, mode, seed = inputs
    ctx.save_for_backward(input, weight, seed)
    ctx.has_bias = bias is not None
    ctx.hyper = (stride, padding, output_padding, groups, dilation)
    ctx.options = (keep, leg, mode)


def _transpose_backward(ctx, grad):  # type: ignore[no-untyped-def]
    input, weight, seed = ctx.saved_tensors
    stride, padding, output_padding, groups, dilation = ctx.hyper
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:  # exact, as the eager backward: the convolution of grad with the weight
        grad_input = exact_conv_op(grad, weight, None, stride, padding, "", dilation, groups, "auto")
    if ctx.needs_input_grad[1]:
        kernel = list(weight.shape[2:])
        grad_weight = randomized_conv_transpose_weight_vjp(
            input, grad, kernel, stride, padding, output_padding, groups, dilation, *ctx.options, seed
        )
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad.sum([0, *range(2, grad.dim())])
    return grad_input, grad_weight, grad_bias, *(None,) * 9


randomized_conv_transpose.register_autograd(_transpose_backward, setup_context=_transpose_setup)


# ------------------------------------------------------------------ front-end hooks
def traced_conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: object,
    padding: object,
    dilation: object,
    groups: int,
    seed: Tensor,
    keep: float,
    leg: str,
    mode: str,
    input_keep: float,
    input_leg: str,
) -> Tensor:
    """``tnconv::randomized_conv`` for :func:`tnconv.randomized.conv` while compiling or tracing."""
    dims = weight.dim() - 2
    pads, name = padding_arguments(padding, dims)
    strides, dilations = int_list(stride, dims), int_list(dilation, dims)
    return randomized_conv(
        input, weight, bias, strides, pads, name, dilations, groups, keep, leg, mode, input_keep, input_leg, seed
    )


def traced_conv_transpose(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: object,
    padding: object,
    output_padding: object,
    groups: int,
    dilation: object,
    seed: Tensor,
    keep: float,
    leg: str,
    mode: str,
) -> Tensor:
    """``tnconv::randomized_conv_transpose`` for :func:`tnconv.randomized.conv_transpose` while compiling or tracing."""
    dims = weight.dim() - 2
    strides, pads, extra, dilations = (int_list(a, dims) for a in (stride, padding, output_padding, dilation))
    return randomized_conv_transpose(
        input, weight, bias, strides, pads, extra, groups, dilations, keep, leg, mode, seed
    )


_SEMANTICS = """

    Random numbers: one seed is drawn from ``generator`` (torch's global CPU generator when
    ``None``) per call and the kept subset is drawn from a generator seeded with it
    (:mod:`tnconv.randomized.ops`), so a compiled function gives the same result as the eager
    one for the same generator state."""


def _front_end(estimator):  # type: ignore[no-untyped-def]
    """``estimator``'s name, signature and docstring (with the seed semantics) for its front-end."""

    def decorate(function):  # type: ignore[no-untyped-def]
        functools.update_wrapper(function, estimator)
        function.__doc__ = (estimator.__doc__ or "") + _SEMANTICS
        return function

    return decorate


@_front_end(estimators.conv_weight_vjp)
def conv_weight_vjp(
    x: Tensor,
    v: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> Tensor:
    check_tensor(x, "x", min_dim=3)
    seed = seed_for(generator, x, "x")
    if not tracing():
        return estimators.conv_weight_vjp(
            x,
            v,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            keep=keep,
            leg=leg,
            mode=mode,
            generator=seeded(seed, x.device),
        )
    dims = x.dim() - 2
    pads, name = padding_arguments(padding, dims)
    kernel, strides, dilations = (int_list(a, dims) for a in (kernel_size, stride, dilation))
    return randomized_conv_weight_vjp(
        x, v, kernel, strides, pads, name, dilations, groups, check_keep(keep), leg, mode, seed
    )


@_front_end(estimators.conv_input_vjp)
def conv_input_vjp(
    weight: Tensor,
    v: Tensor,
    input_size: tuple[int, ...],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "channel",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> Tensor:
    check_tensor(weight, "weight", min_dim=3)
    seed = seed_for(generator, weight, "weight")
    if not tracing():
        return estimators.conv_input_vjp(
            weight,
            v,
            input_size,
            stride,
            padding,
            dilation,
            groups,
            keep=keep,
            leg=leg,
            mode=mode,
            generator=seeded(seed, weight.device),
        )
    dims = weight.dim() - 2
    pads, name = padding_arguments(padding, dims)
    strides, dilations = int_list(stride, dims), int_list(dilation, dims)
    return randomized_conv_input_vjp(
        weight, v, list(input_size), strides, pads, name, dilations, groups, check_keep(keep), leg, mode, seed
    )


@_front_end(estimators.conv_transpose_weight_vjp)
def conv_transpose_weight_vjp(
    x: Tensor,
    v: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> Tensor:
    check_tensor(x, "x", min_dim=3)
    seed = seed_for(generator, x, "x")
    if not tracing():
        return estimators.conv_transpose_weight_vjp(
            x,
            v,
            kernel_size,
            stride,
            padding,
            output_padding,
            groups,
            dilation,
            keep=keep,
            leg=leg,
            mode=mode,
            generator=seeded(seed, x.device),
        )
    dims = x.dim() - 2
    lists = [int_list(a, dims) for a in (kernel_size, stride, padding, output_padding)]
    return randomized_conv_transpose_weight_vjp(
        x, v, *lists, groups, int_list(dilation, dims), check_keep(keep), leg, mode, seed
    )


__all__ = [
    "SEED_HIGH",
    "conv_input_vjp",
    "conv_transpose_weight_vjp",
    "conv_weight_vjp",
    "draw",
    "generator_key",
    "seed_for",
    "seeded",
    "traced_conv",
    "traced_conv_transpose",
]
