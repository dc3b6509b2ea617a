"""Per-sample weight gradients of a convolution and their second moment (SPEC §3).

The per-sample gradient is the weight VJP of the convolution's network with the batch leg
``n`` kept open: ``∇w_n[(g co), ci, k] = Σ_{o,i} x[n,g,ci,i] Π[i,o,k] v[n,g,co,o]``. Its
second moment ``Σ_n ∇w_n ⊙ ∇w_n`` is that network times a copy of itself, summed over
``n``: one network, contracted directly unless materialising the per-sample gradients
first is cheaper (``opt_einsum``'s operation count decides, see :mod:`tnconv.ops.squares`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from ..hyperparams import (
    IntOrTuple,
    Padding,
    check_same_dtype_device,
    check_tensor,
    normalize_groups,
    normalize_tuple,
)
from ..network import TensorNetwork
from .conv import conv_network
from .squares import contract_square, square_network


def conv_for_output(
    x_shape: Sequence[int],
    out_shape: Sequence[int],
    out_name: str,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    lead: int = 0,
) -> TensorNetwork:
    """The convolution network for input ``x_shape`` whose output is shaped like ``out_shape``
    without its ``lead`` leading dimensions (``C_out`` is read from ``out_shape``).

    Raises ``ValueError`` naming ``out_name`` when ``out_shape`` does not match the output.
    """
    x_shape, out_shape = tuple(int(s) for s in x_shape), tuple(int(s) for s in out_shape)
    if len(x_shape) < 3:
        raise ValueError(f"x_shape must be [N, C_in, I_1, ...] (at least 3 dimensions), got {x_shape}")
    dims = len(x_shape) - 2
    layout = "[" + "M, " * lead + "N, C_out, " + ", ".join(f"O_{d + 1}" for d in range(dims)) + "]"
    if len(out_shape) != lead + dims + 2:
        raise ValueError(f"{out_name} must have shape {layout} for a {dims}-d convolution, got {out_shape}")
    kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    groups = normalize_groups(groups, x_shape[1])
    out_channels = out_shape[lead + 1]
    if out_channels % groups:
        raise ValueError(f"{out_name} has {out_channels} channels (C_out), which groups={groups} does not divide")
    conv = conv_network(x_shape, (out_channels, x_shape[1] // groups) + kernel, stride, padding, dilation, groups)
    if out_shape[lead:] != conv.output_shape:
        raise ValueError(
            f"{out_name} must have shape {layout} = {out_shape[:lead] + conv.output_shape} to match the "
            f"convolution's output {conv.output_shape}, got {out_shape}"
        )
    return conv


@lru_cache(maxsize=1024)
def _per_sample(conv: TensorNetwork) -> TensorNetwork:
    vjp = conv.vjp("w")
    return vjp.with_nodes(vjp.nodes, output=(("n",),) + vjp.output)


def _moment_axes(per_sample: TensorNetwork) -> tuple[int, ...]:
    return tuple(range(1, len(per_sample.output)))


def per_sample_weight_grad_network(
    x_shape: Sequence[int],
    v_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """Per-sample weight gradients ``x[n,g,ci,i] Π[i,o,k] v[n,g,co,o]`` (``n`` kept).

    Inputs ``x`` ``[N, C_in, I…]`` and ``v`` ``[N, C_out, O…]``; output ``[N, C_out, C_in/G, K…]``.

    >>> import tnconv
    >>> tnconv.networks.per_sample_weight_grad((3, 2, 6), (3, 4, 4), 3).output_shape
    (3, 4, 2, 3)
    """
    return _per_sample(conv_for_output(x_shape, v_shape, "v", kernel_size, stride, padding, dilation, groups))


def grad_second_moment_network(
    x_shape: Sequence[int],
    v_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """``Σ_n (x Π v)_n ⊙ (x' Π' v')_n``: the second moment of the per-sample gradients.

    Output ``[C_out, C_in/G, K…]``; inputs ``x`` and ``v`` (each read by two nodes).

    >>> import tnconv
    >>> tnconv.networks.grad_second_moment((3, 2, 6), (3, 4, 4), 3).inputs
    ('x', 'v')
    """
    per_sample = per_sample_weight_grad_network(x_shape, v_shape, kernel_size, stride, padding, dilation, groups)
    return square_network(per_sample, keep=_moment_axes(per_sample))


def _check_pair(x: torch.Tensor, v: torch.Tensor, name: str) -> None:
    check_tensor(x, "x", min_dim=3)
    check_tensor(v, name)
    check_same_dtype_device(x=x, **{name: v})


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
    _check_pair(x, v, "v")
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
    _check_pair(x, v, "v")
    per_sample = per_sample_weight_grad_network(x.shape, v.shape, kernel_size, stride, padding, dilation, groups)
    moment = contract_square(per_sample, {"x": x, "v": v}, keep=_moment_axes(per_sample))
    if not bias:
        return moment
    return moment, v.flatten(2).sum(-1).square().sum(0)
