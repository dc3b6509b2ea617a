"""Small 1-d weight VJPs as one GEMM on an im2col buffer, where that beats PyTorch's kernel.

On the CPU, PyTorch runs a float32 convolution's weight VJP through oneDNN from a batch of
two on, and oneDNN's call has a fixed cost of about 50 µs (one thread), several times the
arithmetic of a small 1-d layer: the weight VJP of ``[64, 64, 7]`` with a 3-tap kernel costs
189 µs for 64 samples and 123 µs for 32, where its own arithmetic is ~10 µs. Written out
as an im2col GEMM, ``G = V · Jᵀ`` with ``V = v`` as ``[C_out, N·O]`` and ``J`` the windows of
``x`` as ``[C_in·K, N·O]`` (one copy, small for such layers), it costs ~85 µs for 32 samples.

:func:`weight_vjp` is a drop-in for ``aten.convolution_backward``'s weight gradient: it
takes the GEMM when :func:`prefers_gemm`'s cost model (fitted to both routes' timings on
random 1-d layers) estimates it faster, and torch's kernel otherwise — always for
``D ≥ 2`` (measured: the GEMM is 1.0–3.5× slower on the bundled 2-d layers), ``groups > 1``,
one sample (torch's own im2col path then), dtypes other than float32 and devices other
than the CPU. The native strategy's weight VJPs and the tile estimators' kernel calls go
through it.

>>> x, v = torch.randn(32, 64, 7), torch.randn(32, 64, 5)
>>> prefers_gemm(32, 64, 64, 7, 3, 5, torch.float32, torch.device("cpu"))
True
>>> exact = torch.nn.grad.conv1d_weight(x, (64, 64, 3), v)
>>> torch.allclose(weight_vjp(v, x, (64, 64, 3), (1,), (0,), (1,), 1), exact, atol=1e-4)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

_BACKWARD = torch.ops.aten.convolution_backward.default
_CPU = torch.device("cpu")

#: The two routes' time models (seconds; one thread, float32; non-negative least squares on
#: relative error over 216 random 1-d layers, docs/performance.md "Small 1-d weight VJPs"):
#: torch's kernel ``KERNEL[0] + KERNEL[1]·multiply-adds + KERNEL[2]·bytes of x + KERNEL[3]·bytes of v`` ...
KERNEL_SECONDS = (5.35e-5, 2.53e-11, 1.89e-11, 3.34e-11)
#: ... and the GEMM ``GEMM[0] + GEMM[1]·multiply-adds + GEMM[2]·bytes of J + GEMM[3]·bytes of v + GEMM[4]·bytes of x``.
GEMM_SECONDS = (1.71e-5, 2.25e-11, 5.25e-11, 9.22e-11, 1.25e-10)


#: The GEMM's im2col buffer is at most this many bytes (it is extra memory, and beyond the
#: layers the cost model was fitted on, up to 8 MB, oneDNN's fixed cost is a small share of
#: the call anyway).
MAX_BUFFER_BYTES = 2**21


def prefers_gemm(
    batch: int,
    c_in: int,
    c_out: int,
    length: int,
    kernel: int,
    outputs: int,
    dtype: torch.dtype,
    device: torch.device,
    groups: int = 1,
) -> bool:
    """Whether the im2col GEMM is estimated faster than torch's kernel for the weight VJP of a
    1-d convolution (``x`` of ``[batch, c_in, length]``, ``v`` of ``[batch, c_out, outputs]``,
    ``kernel`` taps), its buffer within :data:`MAX_BUFFER_BYTES`."""
    if device.type != "cpu" or dtype != torch.float32 or groups != 1 or batch < 2 or kernel < 2:
        return False
    madds = c_out * c_in * kernel * batch * outputs
    x_bytes, v_bytes = 4 * batch * c_in * length, 4 * batch * c_out * outputs
    j_bytes = 4 * c_in * kernel * batch * outputs  # the im2col buffer
    if j_bytes > MAX_BUFFER_BYTES:
        return False
    k0, k1, k2, k3 = KERNEL_SECONDS
    g0, g1, g2, g3, g4 = GEMM_SECONDS
    torch_kernel = k0 + k1 * madds + k2 * x_bytes + k3 * v_bytes
    gemm = g0 + g1 * madds + g2 * j_bytes + g3 * v_bytes + g4 * x_bytes
    return gemm < torch_kernel


def gemm_weight_vjp_1d(
    x: torch.Tensor, v: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """``[C_out, C_in, K]``: the weight VJP of a 1-d convolution (``groups = 1``, symmetric
    ``padding``) as ``V · Jᵀ``: ``J`` the windows of the padded ``x`` copied once as
    ``[C_in·K, N·O]``, ``V`` = ``v`` as ``[C_out, N·O]``."""
    padded = F.pad(x, (padding, padding)) if padding else x
    windows = padded.unfold(2, dilation * (kernel - 1) + 1, stride)  # [N, C_in, O, span]
    if dilation > 1:
        windows = windows[..., ::dilation]
    batch, c_in, outputs, _ = windows.shape
    columns = windows.permute(1, 3, 0, 2).reshape(c_in * kernel, batch * outputs)
    rows = v.transpose(0, 1).reshape(v.shape[1], batch * outputs)
    return (rows @ columns.t()).view(v.shape[1], c_in, kernel)


def _gemm_allowed(x: torch.Tensor) -> bool:
    """The part of the route that depends on the tensors, not their shapes: float32 on the CPU
    (what :func:`prefers_gemm` was fitted for), outside ``torch.func`` transforms."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and not torch._C._are_functorch_transforms_active()


def _kernel(
    v: torch.Tensor,
    x: torch.Tensor,
    weight_shape: tuple[int, ...],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    weight = v.new_empty(weight_shape)  # never read (a broadcast view would slow the kernel down)
    zeros, mask = [0] * (x.dim() - 2), (False, True, False)
    return _BACKWARD(v, x, weight, None, list(stride), list(padding), list(dilation), False, zeros, groups, mask)[1]


def weight_vjp(
    v: torch.Tensor,
    x: torch.Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``aten.convolution_backward``'s weight gradient (symmetric ``padding`` per dimension),
    by the im2col GEMM where :func:`prefers_gemm` says so."""
    if (
        x.dim() == 3
        and prefers_gemm(
            x.shape[0], x.shape[1], v.shape[1], x.shape[2], weight_shape[2], v.shape[2], x.dtype, x.device, groups
        )
        and _gemm_allowed(x)
    ):
        return gemm_weight_vjp_1d(x, v, weight_shape[2], stride[0], padding[0], dilation[0])
    return _kernel(v, x, tuple(weight_shape), stride, padding, dilation, groups)


def weight_vjp_runner(
    x_shape: Sequence[int],
    v_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(v, x) ->`` :func:`weight_vjp` for these shapes, with the shape-only part of the route
    (:func:`prefers_gemm`) decided once: what a bound runner keeps, so that its call is a dtype
    and device test plus the tensor work."""
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
    gemm = len(x_shape) == 3 and prefers_gemm(
        x_shape[0], x_shape[1], v_shape[1], x_shape[2], weight_shape[2], v_shape[2], torch.float32, _CPU, groups
    )
    if not gemm:
        return lambda v, x: _kernel(v, x, weight_shape, stride, padding, dilation, groups)
    kernel, step, pad, spacing = weight_shape[2], stride[0], padding[0], dilation[0]

    def run(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if _gemm_allowed(x):
            return gemm_weight_vjp_1d(x, v, kernel, step, pad, spacing)
        return _kernel(v, x, weight_shape, stride, padding, dilation, groups)

    return run


__all__ = [
    "GEMM_SECONDS",
    "KERNEL_SECONDS",
    "MAX_BUFFER_BYTES",
    "gemm_weight_vjp_1d",
    "prefers_gemm",
    "weight_vjp",
    "weight_vjp_runner",
]
