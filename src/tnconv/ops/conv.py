"""The N-d convolution as a tensor network (SPEC §3, first row).

``y[n, (g co), o] = Σ x[n, (g ci), i] · Π[i, o, k] · w[(g co), ci, k]`` (+ bias),
with one index pattern per spatial dimension.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..autodiff import contract as differentiable_contract
from ..autodiff import needs_autograd
from ..caching import symbolic_cache
from ..hyperparams import (
    ConvGeometry,
    IntOrTuple,
    Padding,
    check_same_dtype_device,
    check_tensor,
    conv_geometry,
    normalize_groups,
)
from ..native import recognize, run_native
from ..network import Axes, Node, TensorNetwork


def spatial_legs(prefix: str, dims: int) -> tuple[str, ...]:
    """Leg names ``prefix1 … prefixD`` of one spatial family (``i``, ``o`` or ``k``)."""
    return tuple(f"{prefix}{d + 1}" for d in range(dims))


def pattern_nodes(
    geometry: ConvGeometry, input_prefix: str = "i", output_prefix: str = "o", kernel_prefix: str = "k"
) -> tuple[Node, ...]:
    """One ``"pattern"`` node ``Π_d[i_d, o_d, k_d]`` per spatial dimension."""
    dims = geometry.dims
    return tuple(
        Node(f"pi{d + 1}", "pattern", ((i,), (o,), (k,)), pattern=p)
        for d, (i, o, k, p) in enumerate(
            zip(
                spatial_legs(input_prefix, dims),
                spatial_legs(output_prefix, dims),
                spatial_legs(kernel_prefix, dims),
                geometry.patterns(),
            )
        )
    )


def pattern_sizes(geometry: ConvGeometry) -> dict[str, int]:
    """Sizes of the legs ``i_d``, ``o_d``, ``k_d``."""
    dims = geometry.dims
    sizes: dict[str, int] = {}
    for prefix, values in (("i", geometry.input_size), ("o", geometry.output_size), ("k", geometry.kernel_size)):
        sizes.update(zip(spatial_legs(prefix, dims), values))
    return sizes


@lru_cache(maxsize=4096)
def _conv_network(
    batch: int, in_per_group: int, out_per_group: int, groups: int, geometry: ConvGeometry
) -> TensorNetwork:
    dims = geometry.dims
    i, o, k = spatial_legs("i", dims), spatial_legs("o", dims), spatial_legs("k", dims)
    single = lambda legs: tuple((leg,) for leg in legs)  # noqa: E731
    x_axes: Axes = (("n",), ("g", "ci")) + single(i)
    w_axes: Axes = (("g", "co"), ("ci",)) + single(k)
    out: Axes = (("n",), ("g", "co")) + single(o)
    sizes = {"n": batch, "g": groups, "ci": in_per_group, "co": out_per_group, **pattern_sizes(geometry)}
    nodes = (Node("x", "input", x_axes),) + pattern_nodes(geometry) + (Node("w", "input", w_axes),)
    return TensorNetwork(nodes, tuple(sizes.items()), out)


@symbolic_cache
def conv_network(
    input_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The convolution's tensor network (inputs ``x`` and ``w``), for any number of dims.

    Args:
        input_shape: ``[N, C_in, I_1, …, I_D]``.
        weight_shape: ``[C_out, C_in/G, K_1, …, K_D]``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d``.

    Returns:
        A network with output ``[N, C_out, O_1, …, O_D]``.

    >>> tn = conv_network((1, 4, 5, 5), (6, 2, 3, 3), groups=2)
    >>> tn.output_shape
    (1, 6, 3, 3)
    """
    batch, channels, geometry, groups = _validate_shapes(input_shape, weight_shape, stride, padding, dilation, groups)
    out_channels, in_per_group = weight_shape[0], weight_shape[1]
    return _conv_network(batch, in_per_group, out_channels // groups, groups, geometry)


def _validate_shapes(input_shape, weight_shape, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    if len(input_shape) < 3:
        raise ValueError(f"input must have shape [N, C_in, I_1, ...] (at least 3 dimensions), got {input_shape}")
    dims = len(input_shape) - 2
    if len(weight_shape) != dims + 2:
        raise ValueError(
            f"weight must have {dims + 2} dimensions [C_out, C_in/groups, K_1..K_{dims}] for a "
            f"{dims}-d input, got shape {weight_shape}"
        )
    channels = input_shape[1]
    groups = normalize_groups(groups, channels, weight_shape[0])
    if weight_shape[1] * groups != channels:
        raise ValueError(
            f"weight has {weight_shape[1]} input channels per group but input has {channels} channels "
            f"and groups={groups} (expected {channels // groups})"
        )
    geometry = conv_geometry(input_shape[2:], weight_shape[2:], stride, padding, dilation)
    return input_shape[0], channels, geometry, groups


def add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y + bias`` broadcast over ``[N, C, O…]``."""
    if bias is None:
        return y
    return y + bias.view((1, -1) + (1,) * (y.dim() - 2))


def contract_with_bias(
    network: TensorNetwork, strategy: str, bias: torch.Tensor | None, **tensors: torch.Tensor
) -> torch.Tensor:
    """``network``'s value plus ``bias`` over its channel axis (axis 1), differentiable.

    Gradients flow through the network's own VJPs (:mod:`tnconv.autodiff`; the bias gradient
    is torch's sum). When nothing needs a derivative and the network runs natively, the bias
    is fused into torch's kernel instead of costing another pass over the output.
    """
    if bias is not None and strategy in ("auto", "native") and not needs_autograd(bias, *tensors.values()):
        call = recognize(network)
        if call is not None and call.kind != "weight_vjp" and call.scale == 1.0:
            return run_native(call, tensors, bias=bias)
    return add_bias(differentiable_contract(network, strategy, **tensors), bias)


def check_bias(bias: torch.Tensor | None, channels: int) -> None:
    if bias is not None:
        check_tensor(bias, "bias")
        if tuple(bias.shape) != (channels,):
            raise ValueError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """N-d convolution (cross-correlation, as PyTorch), evaluated as a tensor network.

    Args:
        input: ``[N, C_in, I_1, …, I_D]``, any ``D ≥ 1``.
        weight: ``[C_out, C_in/groups, K_1, …, K_D]``.
        bias: ``[C_out]`` or ``None``.
        stride, padding, dilation, groups: as ``torch.nn.functional.conv2d``; ``padding``
            may be an int, a D-tuple, ``'valid'`` or ``'same'``.
        strategy: execution strategy (``"auto"``, ``"einsum"``, …; see :mod:`tnconv.contract`).

    Returns:
        ``[N, C_out, O_1, …, O_D]``.

    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 3, 5, 5, 5, 5), torch.randn(4, 3, 3, 3, 3, 3)
    >>> tnconv.conv(x, w, padding="same").shape        # a 4-d convolution
    torch.Size([2, 4, 5, 5, 5, 5])
    """
    check_tensor(input, "input", min_dim=3)
    check_tensor(weight, "weight")
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    check_bias(bias, weight.shape[0])
    network = conv_network(input.shape, weight.shape, stride, padding, dilation, groups)
    return contract_with_bias(network, strategy, bias, x=input, w=weight)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """1-d :func:`conv` that insists on a ``[N, C_in, L]`` input."""
    _check_dims(input, 1)
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """2-d :func:`conv` that insists on a ``[N, C_in, H, W]`` input."""
    _check_dims(input, 2)
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """3-d :func:`conv` that insists on a ``[N, C_in, D, H, W]`` input."""
    _check_dims(input, 3)
    return conv(input, weight, bias, stride, padding, dilation, groups)


def _check_dims(input: torch.Tensor, dims: int) -> None:
    check_tensor(input, "input")
    if input.dim() != dims + 2:
        raise ValueError(f"input of conv{dims}d must have {dims + 2} dimensions, got shape {tuple(input.shape)}")
