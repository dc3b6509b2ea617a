"""The transposed convolution as a tensor network (SPEC §3).

``y[n, (g co), i] = Σ x[n, (g ci), o] · Π[i, o, k] · w[(g ci), co, k]`` (+ bias), with the
Π of the convolution that maps the transposed convolution's output size ``I'`` back to its
input size ``O``. The network is *derived*: it is the input VJP of that convolution
(SPEC §3, "input VJP = transposed conv") with the vector named ``x``, its channel legs
renamed to the transposed convolution's point of view (``ci`` ↔ ``co``).

Example:
    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)
    >>> y = tnconv.conv_transpose(x, w, stride=2, padding=1, output_padding=1, groups=2)
    >>> ref = torch.nn.functional.conv_transpose2d(x, w, None, 2, 1, 1, 2)
    >>> y.shape, torch.allclose(y, ref, atol=1e-4)
    (torch.Size([2, 6, 10, 10]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from ..caching import symbolic_cache
from ..hyperparams import (
    ConvGeometry,
    IntOrTuple,
    check_same_dtype_device,
    check_tensor,
    conv_transpose_geometry,
    normalize_groups,
)
from ..network import TensorNetwork
from ..simplify import merge_identities
from .conv import _conv_network, check_bias, contract_with_bias


@lru_cache(maxsize=1024)
def _conv_transpose_network(
    batch: int, in_per_group: int, out_per_group: int, groups: int, geometry: ConvGeometry
) -> TensorNetwork:
    # the convolution I' -> O has C_out (transposed) input and C_in (transposed) output channels
    forward = _conv_network(batch, out_per_group, in_per_group, groups, geometry)
    return merge_identities(forward.vjp("x", vector="x")).rename({"ci": "co", "co": "ci"})


@symbolic_cache
def conv_transpose_network(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> TensorNetwork:
    """The transposed convolution's network (inputs ``x`` and ``w``), any number of dims.

    Args:
        input_shape: ``[N, C_in, O_1, …, O_D]``.
        weight_shape: ``[C_in, C_out/groups, K_1, …, K_D]`` (PyTorch's layout).
        stride, padding, output_padding, groups, dilation: as
            ``torch.nn.functional.conv_transpose2d``.

    Returns:
        A network with output ``[N, C_out, I'_1, …, I'_D]``,
        ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``.

    >>> tn = conv_transpose_network((1, 4, 3), (4, 2, 3), stride=2, groups=2)
    >>> print(tn)
    TensorNetwork: abc,defc,gdeb->gdfa
      pi1        pattern  [i1, o1, k1] IndexPattern(input_size=7, output_size=3, kernel_size=3, stride=2, ...)
      w          input    [(g ci), co, k1]
      x          input    [n, (g ci), o1]
      legs: i1=7(a), o1=3(b), k1=3(c), g=2(d), ci=2(e), co=2(f), n=1(g)
      output: [n, (g co), i1]
    """
    batch, in_per_group, out_per_group, groups, geometry = _validate(
        input_shape, weight_shape, stride, padding, output_padding, groups, dilation
    )
    return _conv_transpose_network(batch, in_per_group, out_per_group, groups, geometry)


def _validate(input_shape, weight_shape, stride, padding, output_padding, groups, dilation):  # type: ignore[no-untyped-def]
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if len(input_shape) < 3:
        raise ValueError(f"input must have shape [N, C_in, O_1, ...] (at least 3 dimensions), got {input_shape}")
    dims = len(input_shape) - 2
    if len(weight_shape) != dims + 2:
        raise ValueError(
            f"weight must have {dims + 2} dimensions [C_in, C_out/groups, K_1..K_{dims}] for a "
            f"{dims}-d input, got shape {weight_shape}"
        )
    channels = input_shape[1]
    groups = normalize_groups(groups, channels)
    if weight_shape[0] != channels:
        raise ValueError(
            f"weight of a transposed convolution has shape [C_in, C_out/groups, K...]: its first dimension "
            f"{weight_shape[0]} must equal the input's {channels} channels"
        )
    geometry = conv_transpose_geometry(input_shape[2:], weight_shape[2:], stride, padding, output_padding, dilation)
    return input_shape[0], channels // groups, weight_shape[1], groups, geometry


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """N-d transposed convolution, evaluated as a tensor network (gradients too).

    Args:
        input: ``[N, C_in, O_1, …, O_D]``, any ``D ≥ 1``.
        weight: ``[C_in, C_out/groups, K_1, …, K_D]``.
        bias: ``[C_out]`` or ``None``.
        stride, padding, output_padding, groups, dilation: as
            ``torch.nn.functional.conv_transpose2d`` (``output_padding`` must be smaller
            than the stride or the dilation of its dimension).
        strategy: execution strategy (see :mod:`tnconv.contract`).

    Returns:
        ``[N, C_out, I'_1, …, I'_D]`` with ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``.

    >>> import torch, tnconv
    >>> tnconv.conv_transpose(torch.randn(1, 2, 3, 3, 3, 3), torch.randn(2, 4, 2, 2, 2, 2), stride=2).shape
    torch.Size([1, 4, 6, 6, 6, 6])
    """
    check_tensor(input, "input", min_dim=3)
    check_tensor(weight, "weight")
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    network = conv_transpose_network(input.shape, weight.shape, stride, padding, output_padding, groups, dilation)
    check_bias(bias, network.output_shape[1])
    return contract_with_bias(network, strategy, bias, x=input, w=weight)


def _aliased(dims: int):  # type: ignore[no-untyped-def]
    def conv_transpose_nd(  # type: ignore[no-untyped-def]
        input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        check_tensor(input, "input")
        if input.dim() != dims + 2:
            raise ValueError(
                f"input of conv_transpose{dims}d must have {dims + 2} dimensions, got shape {tuple(input.shape)}"
            )
        return conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)

    conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = f"conv_transpose{dims}d"
    conv_transpose_nd.__doc__ = f"{dims}-d :func:`conv_transpose` that insists on a {dims}-d input."
    return conv_transpose_nd


conv_transpose1d = _aliased(1)
conv_transpose2d = _aliased(2)
conv_transpose3d = _aliased(3)
