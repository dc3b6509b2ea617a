"""Trusted references written for the tests (independent of tnconv's code)."""

from __future__ import annotations

import torch.nn.functional as F

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_reference(x, w, stride, padding, dilation, groups):
    """Convolution of any D >= 1 with int-tuple hyper-parameters (symmetric padding).

    D <= 3 is torch's own; for D > 3 the first spatial dimension is padded explicitly and
    its kernel is looped over, each tap a (D-1)-d convolution of a strided slice.
    """
    dims = x.dim() - 2
    if dims <= 3:
        return TORCH_CONV[dims](x, w, None, stride, padding, dilation, groups)
    s, p, d, k = stride[0], padding[0], dilation[0], w.shape[2]
    pad = [0, 0] * (dims - 1) + [p, p]
    xp = F.pad(x, pad)
    out = (xp.shape[2] - d * (k - 1) - 1) // s + 1
    y = 0
    for tap in range(k):
        start = d * tap
        xs = xp[:, :, start : start + s * (out - 1) + 1 : s]
        # fold the first spatial dimension into the batch, convolve the rest
        n, c, o = xs.shape[:3]
        flat = xs.movedim(2, 1).reshape(n * o, c, *xs.shape[3:])
        part = conv_reference(flat, w[:, :, tap], stride[1:], padding[1:], dilation[1:], groups)
        y = y + part.reshape(n, o, *part.shape[1:]).movedim(1, 2)
    return y
