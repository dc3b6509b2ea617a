"""References for the curvature tests, written independently of tnconv.

The unfold (im2col) of a convolution is a depthwise convolution with one-hot kernels:
output channel ``c·∏K + j`` picks tap ``j`` (row-major over the kernel) of channel ``c``.
The unfold of a transposed convolution's input is the transposed convolution with the
same one-hot kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import conv_reference

TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def padding_pairs(padding, kernel, dilation):
    """(left, right) per dimension, from an int, a tuple, 'valid' or 'same' (PyTorch's rule:
    total dilation·(K−1), the smaller half on the left)."""
    dims = len(kernel)
    if padding == "valid":
        return [(0, 0)] * dims
    if padding == "same":
        totals = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    pads = (padding,) * dims if isinstance(padding, int) else tuple(padding)
    return [(p, p) for p in pads]


def one_hot_kernels(channels, kernel, dtype):
    """``[channels·∏K, 1, K…]``: the identity over kernel taps, once per channel."""
    taps = math.prod(kernel)
    eye = torch.eye(taps, dtype=dtype).reshape(taps, 1, *kernel)
    return eye.repeat(channels, *([1] * (len(kernel) + 1)))


def unfold_reference(x, kernel, stride, padding, dilation):
    """``[N, C·∏K, ∏O]`` unfolded input of a convolution of any D (padding as the user gives it)."""
    dims = x.dim() - 2
    pad = []
    for left, right in reversed(padding_pairs(padding, kernel, dilation)):
        pad += [left, right]
    xp = F.pad(x, pad)
    weight = one_hot_kernels(x.shape[1], kernel, x.dtype)
    return conv_reference(xp, weight, stride, (0,) * dims, dilation, x.shape[1]).flatten(2)


def unfold_transpose_reference(x, kernel, stride, padding, output_padding, dilation):
    """``[N, C·∏K, ∏I']``: the unfold of a transposed convolution's input (D ≤ 3)."""
    channels, taps = x.shape[1], math.prod(kernel)
    weight = torch.eye(taps, dtype=x.dtype).reshape(1, taps, *kernel).repeat(channels, *([1] * (len(kernel) + 1)))
    y = TORCH_CONV_TRANSPOSE[x.dim() - 2](x, weight, None, stride, padding, output_padding, channels, dilation)
    return y.flatten(2)


def factor_reference(unfolded, groups, approx, bias):
    """KFAC input factor from the unfolded input ``[N, C·∏K, P]``: the matrix products."""
    n, features, positions = unfolded.shape
    u = unfolded.reshape(n, groups, features // groups, positions)
    if bias:
        u = torch.cat([u, torch.ones(n, groups, 1, positions, dtype=u.dtype)], dim=2)
    if approx == "expand":
        return torch.einsum("ngap,ngbp->gab", u, u) / n
    mean = u.mean(-1)
    return torch.einsum("nga,ngb->gab", mean, mean) / n


def layer_jacobians(x, weight_shape, conv_kwargs):
    """Per-sample Jacobians of a convolution's output w.r.t. weight and bias, via torch.func.

    ``vmap`` over the batch of ``jacrev`` of the convolution of one sample (``torch``'s own
    for D ≤ 3, the loop reference for D > 3). Returns ``[N, C_out·∏O, C_out·Ci·∏K]`` and
    ``[N, C_out·∏O, C_out]``; the values of w and b do not matter (the layer is linear).
    """
    from torch.func import jacrev, vmap

    from .reference import TORCH_CONV

    dims = x.dim() - 2
    w = torch.randn(weight_shape, dtype=x.dtype)
    b = torch.randn(weight_shape[0], dtype=x.dtype)
    kw = dict(conv_kwargs)
    if dims <= 3:
        layer = lambda w_, b_, xn: TORCH_CONV[dims](xn[None], w_, b_, **kw)[0]
    else:
        layer = lambda w_, b_, xn: (
            conv_reference(xn[None], w_, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])[0]
            + b_.view(-1, *([1] * dims))
        )
    jac_w, jac_b = vmap(jacrev(layer, argnums=(0, 1)), in_dims=(None, None, 0))(w, b, x)
    n = x.shape[0]
    outputs = math.prod(jac_b.shape[1 : 2 + dims])
    return jac_w.reshape(n, outputs, -1), jac_b.reshape(n, outputs, -1)
