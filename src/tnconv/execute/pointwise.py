"""Pointwise convolutions (every kernel size 1, stride 1, no padding) as matrix products.

When every index pattern is the identity (``K = 1``, ``s = 1``, ``P = 0``: ``Π[i, o, 0] =
δ(i, o)``), the convolution contracts channels only: per group ``g`` and position ``p``,
``y[n, g, :, p] = W_g · x[n, g, :, p]`` with ``W_g = w[g]`` a ``[C_out/G, C_in/G]`` matrix.
Its derivatives are matrix products too, and on a CPU ``torch.matmul`` runs them faster than
PyTorch's convolution kernels where measured (``python -m tnconv bench --ops input_vjp``,
docs/performance.md "Pointwise convolutions"):

- the input VJP ``W_gᵀ · v[n, g, :, :]`` on one position or on maps of at least
  :data:`MIN_MATMUL_POSITIONS` positions: 1.3–3× faster than ``aten.convolution_backward``
  or ``conv_transpose2d`` (oneDNN's backward-data path) where first measured, 0.26–1.15× on a
  later sweep; on maps of 2–63 positions one GEMM per sample with so few columns is the slower
  (2–10× on 2×2 maps, 1.0–1.5× on 4×4, 0.87–1.33× on 7×7), so torch's kernel runs there;
- on ``1×1`` maps (squeeze-excitation blocks, classifier heads written as convolutions) the
  forward pass and the weight VJP as one (batched) GEMM over the batch: 3–15× faster.

The forward pass and weight VJP on larger maps stay on torch's kernels (no consistent gain).
All of these read each operand once, multiply no zeros, and return contiguous tensors.

>>> w, v = torch.randn(6, 2, 1, 1), torch.randn(4, 6, 5, 5)   # groups = 2
>>> torch.allclose(input_vjp(w, v, 2), torch.nn.grad.conv2d_input((4, 4, 5, 5), w, v, groups=2), atol=1e-5)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..spec.pattern import IndexPattern

#: Pointwise input VJPs of maps with fewer positions than this (and more than one) run on
#: torch's kernel (see the module docs). Measured (one thread, 79 layers: batch 1–64, 64–1280
#: output and 16–320 input channels, maps 2×2–56×56): the batched matrix product was slower
#: on every 2×2 map (2.3–9.9×), on 4 of 5 4×4 maps (1.04–1.53×) and on 2 of 4 7×7 maps
#: (1.03–1.21×; `mobilenet_v2/features.18.0`, batch 64: 1.33× in the whole-bundle benchmark),
#: and faster on most maps of 14×14 and more (0.26–1.15×).
MIN_MATMUL_POSITIONS = 64


def input_vjp_by_matmul(patterns: tuple[IndexPattern, ...]) -> bool:
    """Whether a pointwise convolution's input VJP runs as a matrix product (:func:`input_vjp`):
    on one position, or on at least :data:`MIN_MATMUL_POSITIONS`."""
    positions = math.prod(p.output_size for p in patterns)
    return positions == 1 or positions >= MIN_MATMUL_POSITIONS


def is_pointwise(patterns: tuple[IndexPattern, ...]) -> bool:
    """Whether every pattern is the identity ``δ(i, o)`` (kernel 1, stride 1, no padding)."""
    return all(
        p.kernel_size == 1 and p.stride == 1 and p.padding == 0 and p.input_size == p.output_size for p in patterns
    )


def input_vjp(weight: torch.Tensor, v: torch.Tensor, groups: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, C_in, S…]``: the input VJP of a pointwise convolution, ``v`` of ``[N, C_out, S…]``
    and ``weight`` of ``[C_out, C_in/G, 1…]``, plus ``bias`` (``[C_in]``, as a transposed
    convolution's) over the channels: fused into the GEMM on one position."""
    batch, c_out, spatial = v.shape[0], v.shape[1], v.shape[2:]
    out_g, in_g = c_out // groups, weight.shape[1]
    positions = math.prod(spatial)
    if positions == 1 and groups == 1:  # [N, C_out] @ [C_out, C_in]: one GEMM
        rows, w2 = v.reshape(batch, c_out), weight.reshape(c_out, in_g)
        result = torch.mm(rows, w2) if bias is None else torch.addmm(bias, rows, w2)
        return result.view(batch, in_g, *spatial)
    w = weight.reshape(groups, out_g, in_g)
    if positions == 1:  # [G, N, C_out/G] @ [G, C_out/G, C_in/G]: one GEMM per group
        rows = v.reshape(batch, groups, out_g).transpose(0, 1)
        if bias is None:
            result = torch.bmm(rows, w)
        else:
            result = torch.baddbmm(bias.view(groups, 1, in_g), rows, w)
        return result.transpose(0, 1).reshape(batch, groups * in_g, *spatial)
    result = torch.matmul(w.transpose(1, 2), v.reshape(batch, groups, out_g, positions))
    result = result.view(batch, groups * in_g, *spatial)
    return result if bias is None else result + bias.view(-1, *[1] * len(spatial))


def forward_1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """``[N, C_out, 1…]``: a pointwise convolution of ``x`` of ``[N, C_in, 1…]`` (one position)."""
    batch, c_in, c_out = x.shape[0], x.shape[1], weight.shape[0]
    ones = (1,) * (x.dim() - 2)
    if groups == 1:  # (F.linear: one call, one autograd node, where mm(rows, w.t()) records three)
        return F.linear(x.reshape(batch, c_in), weight.reshape(c_out, c_in), bias).view(batch, c_out, *ones)
    out_g, in_g = c_out // groups, c_in // groups
    w = weight.reshape(groups, out_g, in_g).transpose(1, 2)
    rows = x.reshape(batch, groups, in_g).transpose(0, 1)  # [G, N, C_in/G]
    result = torch.bmm(rows, w) if bias is None else torch.baddbmm(bias.view(groups, 1, out_g), rows, w)
    return result.transpose(0, 1).reshape(batch, c_out, *ones)


def weight_vjp_1x1(x: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """``[C_out, C_in/G, 1…]``: the weight VJP of a pointwise convolution on one position,
    ``x`` of ``[N, C_in, 1…]``, ``v`` of ``[N, C_out, 1…]`` (``Σ_n v[n] x[n]ᵀ`` per group)."""
    batch, c_in, c_out = x.shape[0], x.shape[1], v.shape[1]
    ones = (1,) * (x.dim() - 2)
    out_g, in_g = c_out // groups, c_in // groups
    if groups == 1:
        return torch.mm(v.reshape(batch, c_out).t(), x.reshape(batch, c_in)).view(c_out, c_in, *ones)
    rows_v = v.reshape(batch, groups, out_g).permute(1, 2, 0)  # [G, C_out/G, N]
    rows_x = x.reshape(batch, groups, in_g).transpose(0, 1)  # [G, N, C_in/G]
    return torch.bmm(rows_v, rows_x).reshape(c_out, in_g, *ones)


__all__ = ["MIN_MATMUL_POSITIONS", "forward_1x1", "input_vjp", "input_vjp_by_matmul", "is_pointwise", "weight_vjp_1x1"]
