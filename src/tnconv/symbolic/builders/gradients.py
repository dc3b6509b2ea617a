"""Networks of per-sample weight gradients and their second moment (docs/reference.md §3).

The per-sample gradient is the weight VJP with the batch leg ``n`` kept open; its second
moment is that network times a copy of itself, summed over ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...caching import cached
from ...spec.validation import IntOrTuple, Padding, normalize_groups, normalize_tuple
from ..network import TensorNetwork
from ..squares import square_network
from .conv import conv_network


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


@cached(maxsize=1024)
def per_sample_of(conv: TensorNetwork) -> TensorNetwork:
    """The per-sample weight gradients of the convolution ``conv`` (its weight VJP, ``n`` kept)."""
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
    return per_sample_of(conv_for_output(x_shape, v_shape, "v", kernel_size, stride, padding, dilation, groups))


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
    return grad_second_moment_of(conv_for_output(x_shape, v_shape, "v", kernel_size, stride, padding, dilation, groups))


@cached(maxsize=1024)
def grad_second_moment_of(conv: TensorNetwork) -> TensorNetwork:
    """The second-moment network of the per-sample gradients of the convolution ``conv``."""
    per_sample = per_sample_of(conv)
    return square_network(per_sample, keep=_moment_axes(per_sample))
