"""Unfold-based references for Kronecker factors (independent of tnconv's code).

The unfolded input is computed by PyTorch's own (transposed) convolution with a one-hot
kernel, ``groups = C_in``: output channel ``(c, k)`` copies input channel ``c`` at kernel
tap ``k`` — im2col for any number of dimensions (checked against
``torch.nn.functional.unfold`` in 2-d by the tests; ``D > 3`` through the loop-of-conv3d
reference of tests/reference.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import conv_reference

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _one_hot_kernel(channels, kernel_size, dtype):
    taps = math.prod(kernel_size)
    eye = torch.eye(taps, dtype=dtype).reshape(1, taps, *kernel_size)
    return eye.expand(channels, taps, *kernel_size).contiguous()


def unfold_conv(x, kernel_size, stride, padding, dilation):
    """``[N, C·∏K, O…]`` (features ordered ``(c, k)``) of a convolution's input."""
    channels, dims = x.shape[1], x.dim() - 2
    weight = _one_hot_kernel(channels, kernel_size, x.dtype).reshape(-1, 1, *kernel_size)
    if dims > 3:
        tuples = [_tuple(v, dims) for v in (stride, padding, dilation)]
        return conv_reference(x, weight, *tuples, channels)
    return CONV[dims](x, weight, None, stride, padding, dilation, channels)


def unfold_conv_transpose(x, kernel_size, stride, padding, output_padding, dilation):
    """``[N, C·∏K, I'…]``: the unfolded input of a transposed convolution (one column per output position)."""
    channels, dims = x.shape[1], x.dim() - 2
    weight = _one_hot_kernel(channels, kernel_size, x.dtype)
    return CONV_T[dims](x, weight, None, stride, padding, output_padding, channels, dilation)


def input_factor_from_unfolded(unfolded, groups, bias, approx):
    """``A [G, d, d]`` from ``[N, C·∏K, positions…]`` (docs/reference.md §3 normalisation)."""
    n = unfolded.shape[0]
    u = unfolded.reshape(n, groups, unfolded.shape[1] // groups, -1)
    if bias:
        u = torch.cat([u, torch.ones_like(u[:, :, :1])], dim=2)
    positions = u.shape[-1]
    if approx == "expand":
        return torch.einsum("ngap,ngbp->gab", u, u) / n
    s = u.sum(-1)
    return torch.einsum("nga,ngb->gab", s, s) / (n * positions**2)


def kfc_factor(x, kernel_size, stride=1, padding=0, dilation=1, groups=1, *, bias=False):
    k = _tuple(kernel_size, x.dim() - 2)
    return input_factor_from_unfolded(unfold_conv(x, k, stride, padding, dilation), groups, bias, "expand")


def kfac_reduce_factor(x, kernel_size, stride=1, padding=0, dilation=1, groups=1, *, bias=False):
    k = _tuple(kernel_size, x.dim() - 2)
    return input_factor_from_unfolded(unfold_conv(x, k, stride, padding, dilation), groups, bias, "reduce")


def kfc_factor_transpose(x, kernel_size, stride=1, padding=0, output_padding=0, dilation=1, groups=1, *, bias=False):
    k = _tuple(kernel_size, x.dim() - 2)
    u = unfold_conv_transpose(x, k, stride, padding, output_padding, dilation)
    return input_factor_from_unfolded(u, groups, bias, "expand")


def kfac_reduce_factor_transpose(
    x, kernel_size, stride=1, padding=0, output_padding=0, dilation=1, groups=1, *, bias=False
):
    k = _tuple(kernel_size, x.dim() - 2)
    u = unfold_conv_transpose(x, k, stride, padding, output_padding, dilation)
    return input_factor_from_unfolded(u, groups, bias, "reduce")


def _tuple(value, dims):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def stacked_factors(kfac, inputs, targets, generator=None):
    """The factors as KFAC computed them before streaming: every layer's input, output and
    output gradients (one per backpropagated vector) recorded, stacked, then the factors.

    Uses only the layer adapters' ``input_factor``/``output_factor`` and autograd; returns
    ``{name: (A, B)}``.
    """
    from tnconv.kfac.layers import LinearLayer
    from tnconv.kfac.loss import backprop_vectors

    seen, grads = {}, {}
    anchor = torch.zeros((), requires_grad=True)

    def tap(name):
        def hook(module, args, output):
            seen[name] = (args[0].detach(), output.detach())
            grads[name] = []
            tapped = output + anchor
            tapped.register_hook(grads[name].append)
            return tapped

        return hook

    handles = [layer.module.register_forward_hook(tap(n)) for n, layer in kfac.layers.items()]
    with torch.enable_grad():
        output = kfac.model(inputs)
    for h in handles:
        h.remove()
    vectors = backprop_vectors(kfac.loss_fn, output, targets, kfac.fisher, kfac.mc_samples, generator)
    for m, v in enumerate(vectors):
        torch.autograd.grad(output, anchor, v, retain_graph=m < len(vectors) - 1, allow_unused=True)
    result = {}
    for name, (x, y) in seen.items():
        layer = kfac.layers[name]
        g = torch.stack(grads[name]) if grads[name] else y.new_zeros((len(vectors), *y.shape))
        A, B = layer.input_factor(x, y, kfac.approx), layer.output_factor(g, kfac.approx)
        if isinstance(layer, LinearLayer):
            A, B = A[0], B[0]
        result[name] = (A, B)
    return result
