"""Training with randomized backpropagation: :func:`conv`, whose backward uses the estimators."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..execute.autodiff import autocast_inputs
from ..execute.ops import tracing
from ..functional.conv import conv as exact_conv
from ..functional.transpose import conv_transpose as exact_conv_transpose
from ..spec.validation import IntOrTuple, Padding, check_bias, check_same_dtype_device, check_tensor
from .estimators import conv_input_vjp, conv_transpose_weight_vjp, conv_weight_vjp
from .ops import seed_for, seeded, traced_conv, traced_conv_transpose
from .sampling import check_keep, check_leg, check_mode


@dataclass(frozen=True)
class BackwardOptions:
    """How :func:`conv`'s backward estimates its gradients."""

    keep: float = 1.0
    leg: str = "spatial"
    mode: str = "bernoulli"
    input_keep: float = 1.0
    input_leg: str = "channel"
    generator: torch.Generator | None = None


class _RandomizedBackwardConv(torch.autograd.Function):
    """Exact forward, randomized backward; ``torch.func`` transforms (``grad``, ``vmap``) work:
    the forward is separate from :meth:`setup_context` and the vmap rule is generated (each
    draw is shared by the vmapped examples — the draw itself is not batched)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, options):  # type: ignore[no-untyped-def]
        return exact_conv(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        input, weight, bias, stride, padding, dilation, groups, options = inputs
        ctx.save_for_backward(input, weight)
        ctx.hyper = (stride, padding, dilation, groups)
        ctx.options = options
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        input, weight = ctx.saved_tensors
        options: BackwardOptions = ctx.options
        hyper = ctx.hyper
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = conv_input_vjp(
                weight,
                grad,
                input.shape,
                *hyper,
                keep=options.input_keep,
                leg=options.input_leg,
                mode=options.mode,
                generator=options.generator,
            )
        if ctx.needs_input_grad[1]:
            grad_weight = conv_weight_vjp(
                input,
                grad,
                weight.shape[2:],
                *hyper,
                keep=options.keep,
                leg=options.leg,
                mode=options.mode,
                generator=options.generator,
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum([d for d in range(grad.dim()) if d != 1])
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    input_keep: float = 1.0,
    input_leg: str = "channel",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`tnconv.conv` whose backward uses randomized VJPs.

    The forward is exact. In backward, the weight gradient is
    :func:`conv_weight_vjp` with ``keep``, ``leg``, ``mode``; the input gradient is
    :func:`conv_input_vjp` with ``input_keep`` (exact by default) and ``input_leg``; the
    bias gradient is exact. ``torch.func.grad`` and ``torch.func.vmap`` work through it
    (``vmap(grad(loss))``: per-example gradients; one draw is shared by the examples).
    Differentiating the randomized backward again is not supported. Random numbers: one
    seed is drawn from ``generator`` (torch's global CPU generator when ``None``) per call,
    in the forward; the backward's draws come from a generator seeded with it
    (:mod:`tnconv.randomized.ops`), so under ``torch.compile`` (custom operators, no graph
    break) the gradients equal the eager ones for the same generator state.

    >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
    >>> conv(x, w, padding=1, keep=0.25).square().sum().backward()
    >>> w.grad.shape, x.grad.shape
    (torch.Size([4, 3, 3, 3]), torch.Size([2, 3, 8, 8]))
    """
    check_tensor(input, "input", min_dim=3)
    check_tensor(weight, "weight")
    if bias is not None:
        check_tensor(bias, "bias")
    input, weight, bias = autocast_inputs(input, weight, bias)  # saved for backward in the autocast dtype
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    dims = input.dim() - 2
    keep, leg, mode = check_keep(keep), check_leg(leg, "weight", dims), check_mode(mode)
    input_keep, input_leg = check_keep(input_keep, "input_keep"), check_leg(input_leg, "input", dims, "input_leg")
    seed = seed_for(generator, input)  # one seed per call, the draws from seeded(seed) (tnconv.randomized.ops)
    if tracing():
        options = (keep, leg, mode, input_keep, input_leg)
        return traced_conv(input, weight, bias, stride, padding, dilation, groups, seed, *options)
    check_bias(bias, weight.shape[0])  # (the operator checks it while tracing: jit.trace's sizes are tensors)
    options = BackwardOptions(keep, leg, mode, input_keep, input_leg, seeded(seed, input.device))
    return _RandomizedBackwardConv.apply(input, weight, bias, stride, padding, dilation, groups, options)


class _RandomizedBackwardConvTranspose(torch.autograd.Function):
    """Exact transposed convolution, randomized weight gradient (the input and bias
    gradients are exact: the input gradient is the convolution of ``grad`` with the weight)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, stride, padding, output_padding, groups, dilation, options):  # type: ignore[no-untyped-def]
        return exact_conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        input, weight, bias, stride, padding, output_padding, groups, dilation, options = inputs
        ctx.save_for_backward(input, weight)
        ctx.hyper = (stride, padding, output_padding, groups, dilation)
        ctx.options = options
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        input, weight = ctx.saved_tensors
        options: BackwardOptions = ctx.options
        stride, padding, output_padding, groups, dilation = ctx.hyper
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = exact_conv(grad, weight, None, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_weight = conv_transpose_weight_vjp(
                input,
                grad,
                weight.shape[2:],
                stride,
                padding,
                output_padding,
                groups,
                dilation,
                keep=options.keep,
                leg=options.leg,
                mode=options.mode,
                generator=options.generator,
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum([d for d in range(grad.dim()) if d != 1])
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
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
) -> torch.Tensor:
    """:func:`tnconv.conv_transpose` whose weight gradient is
    :func:`conv_transpose_weight_vjp` with ``keep``, ``leg``, ``mode`` (the input and bias
    gradients are exact). Random numbers as :func:`conv`.

    >>> x = torch.randn(2, 4, 6, 6, requires_grad=True)
    >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
    >>> conv_transpose(x, w, stride=2, keep=0.25).square().sum().backward()
    >>> w.grad.shape, x.grad.shape
    (torch.Size([4, 3, 3, 3]), torch.Size([2, 4, 6, 6]))
    """
    check_tensor(input, "input", min_dim=3)
    check_tensor(weight, "weight")
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    dims = input.dim() - 2
    keep, leg, mode = check_keep(keep), check_leg(leg, "weight", dims), check_mode(mode)
    seed = seed_for(generator, input)  # as conv: one seed per call
    if tracing():
        return traced_conv_transpose(
            input, weight, bias, stride, padding, output_padding, groups, dilation, seed, keep, leg, mode
        )
    options = BackwardOptions(keep, leg, mode, generator=seeded(seed, input.device))
    return _RandomizedBackwardConvTranspose.apply(
        input, weight, bias, stride, padding, output_padding, groups, dilation, options
    )
