"""References for transposed convolutions and unfolding, any D (independent of tnconv)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import conv_reference

TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_transpose_reference(x, w, stride, padding, output_padding, dilation, groups, create_graph=False):
    """Transposed convolution as the adjoint of a convolution (autograd of ``conv_reference``).

    The convolution maps ``I' = (O−1)S − 2P + Dl(K−1) + output_padding + 1`` to ``O``
    positions with padding ``P`` on the left and ``P − output_padding`` on the right (a
    negative pad crops); its weight ``[C_in, C_out/G, K…]`` is the transposed weight.
    With ``create_graph`` the result is differentiable w.r.t. ``x`` and ``w``.
    """
    dims = x.dim() - 2
    full = [
        (o - 1) * s - 2 * p + dl * (k - 1) + op + 1
        for o, s, p, dl, k, op in zip(x.shape[2:], stride, padding, dilation, w.shape[2:], output_padding)
    ]
    z = torch.zeros(x.shape[0], w.shape[1] * groups, *full, dtype=x.dtype, requires_grad=True)
    pad = []
    for p, op in reversed(list(zip(padding, output_padding))):
        pad += [p, p - op]
    y = conv_reference(F.pad(z, pad), w, stride, (0,) * dims, dilation, groups)
    assert y.shape == x.shape, (y.shape, x.shape)
    (grad,) = torch.autograd.grad(y, z, x, create_graph=create_graph)
    return grad


def unfold_reference(x, kernel_size, stride, padding, dilation):
    """im2col as a grouped convolution with one-hot kernels: ``[N, C·∏K, ∏O]``."""
    channels, taps = x.shape[1], math.prod(kernel_size)
    one_hot = torch.eye(taps, dtype=x.dtype).reshape(taps, 1, *kernel_size)
    w = one_hot.repeat(channels, *([1] * (len(kernel_size) + 1)))
    return conv_reference(x, w, stride, padding, dilation, channels).flatten(2)
