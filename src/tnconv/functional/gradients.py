"""Per-sample weight gradients of a convolution and their second moment (docs/reference.md §3).

The per-sample gradient is the weight VJP of the convolution's network with the batch leg
``n`` kept open: ``∇w_n[(g co), ci, k] = Σ_{o,i} x[n,g,ci,i] Π[i,o,k] v[n,g,co,o]``. Its
second moment ``Σ_n ∇w_n ⊙ ∇w_n`` is that network times a copy of itself, summed over
``n``: one network, contracted directly unless materialising the per-sample gradients
first is cheaper (``opt_einsum``'s operation count decides, see :mod:`tnconv.execute.squares`).
"""

from __future__ import annotations

import torch

from ..execute.ops import traced_weight_statistic, tracing
from ..execute.squares import contract_square
from ..spec.validation import IntOrTuple, Padding, check_data_pair
from ..symbolic.builders.gradients import _moment_axes, per_sample_weight_grad_network


def per_sample_weight_grad(
    x: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradients of ``Σ_n <v_n, conv(x_n, w)>`` w.r.t. the weight (and bias).

    Args:
        x: the layer input ``[N, C_in, I_1, …, I_D]``.
        v: the gradient w.r.t. the layer output ``[N, C_out, O_1, …, O_D]``.
        kernel_size, stride, padding, dilation, groups: the convolution's.
        bias: also return the per-sample bias gradients.

    Returns:
        ``[N, C_out, C_in/G, K_1, …, K_D]``; with ``bias`` a tuple with ``[N, C_out]`` too.

    >>> import torch, tnconv
    >>> x, v = torch.randn(4, 6, 8, 8), torch.randn(4, 2, 4, 4)
    >>> grads = tnconv.per_sample_weight_grad(x, v, 3, stride=2, padding=1, groups=2)
    >>> grads.shape
    torch.Size([4, 2, 3, 3, 3])
    >>> torch.allclose(grads.sum(0), torch.nn.grad.conv2d_weight(x, (2, 3, 3, 3), v, 2, 1, groups=2), atol=1e-4)
    True
    """
    check_data_pair(x, v, "v")
    if tracing():  # torch.compile / export / jit.trace: one operator (tnconv.functional.curvature_ops)
        grads = traced_weight_statistic(x, v, "per_sample_weight_grad", kernel_size, stride, padding, dilation, groups)
    else:
        network = per_sample_weight_grad_network(x.shape, v.shape, kernel_size, stride, padding, dilation, groups)
        grads = network.simplify().contract(x=x, v=v)
    if not bias:
        return grads
    return grads, v.flatten(2).sum(-1)


def grad_second_moment(
    x: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``Σ_n`` of the squared per-sample weight gradients (and bias gradients).

    Arguments as :func:`per_sample_weight_grad`. The per-sample gradients are materialised
    only when that is cheaper than contracting the squared network directly.

    Returns:
        ``[C_out, C_in/G, K_1, …, K_D]``; with ``bias`` a tuple with ``[C_out]`` too.

    >>> import torch, tnconv
    >>> x, v = torch.randn(4, 3, 10), torch.randn(4, 5, 8)
    >>> moment = tnconv.grad_second_moment(x, v, 3)
    >>> torch.allclose(moment, tnconv.per_sample_weight_grad(x, v, 3).square().sum(0), atol=1e-4)
    True
    """
    check_data_pair(x, v, "v")
    if tracing():
        moment = traced_weight_statistic(x, v, "grad_second_moment", kernel_size, stride, padding, dilation, groups)
    else:
        per_sample = per_sample_weight_grad_network(x.shape, v.shape, kernel_size, stride, padding, dilation, groups)
        moment = contract_square(per_sample, {"x": x, "v": v}, keep=_moment_axes(per_sample))
    if not bias:
        return moment
    return moment, v.flatten(2).sum(-1).square().sum(0)
