"""Per-sample weight gradients of a KFAC layer as ``[N, G, C_out/G, d]`` matrices: what EKFAC's
corrections rotate and what the rank-aware eigenbasis sums (:mod:`tnconv.kfac.eigenbasis`)."""

from __future__ import annotations

import torch

from .layers import ConvLayer, KroneckerLayer


def per_sample_gradients(
    layer: KroneckerLayer, x: torch.Tensor, output: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """Per-sample weight gradients as matrices ``[N, G, C_out/G, d]`` (bias column last when the
    layer has one) from the layer input ``x``, its output (or the output's shape) and the
    output gradient ``grad``; convolutions through tnconv's per-sample weight-VJP network
    (no unfolded input), other layers through their own ``per_sample_gradients``.

    >>> import torch
    >>> from tnconv.kfac.layers import kronecker_layer
    >>> layer = kronecker_layer(torch.nn.Conv2d(2, 3, 3))
    >>> x, g = torch.randn(4, 2, 5, 5), torch.randn(4, 3, 3, 3)
    >>> per_sample_gradients(layer, x, g, g).shape
    torch.Size([4, 1, 3, 19])
    """
    m = layer.module
    if isinstance(layer, ConvLayer) and not m.transposed:
        from ..functional.gradients import per_sample_weight_grad

        x, grad = layer._batched(x), layer._batched(grad)
        padding = m.padding
        if m.padding_mode != "zeros":
            x = torch.nn.functional.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            padding = 0
        result = per_sample_weight_grad(
            x, grad, m.kernel_size, m.stride, padding, m.dilation, m.groups, bias=layer.has_bias
        )
        weight, bias = result if layer.has_bias else (result, None)
        n, groups = weight.shape[0], m.groups
        matrix = weight.reshape(n, groups, weight.shape[1] // groups, -1)
        if bias is not None:
            matrix = torch.cat([matrix, bias.reshape(n, groups, -1, 1)], dim=-1)
        return matrix
    return layer.per_sample_gradients(x, output, grad)


__all__ = ["per_sample_gradients"]
