"""VJPs, JVPs and MJPs of the convolution (docs/reference.md §3), derived from its network.

Every network here is ``conv_network(...)`` with one node removed (docs/reference.md §4):
``.vjp("x")`` / ``.vjp("w")`` for the input/weight VJP, ``.jvp("x")`` / ``.jvp("w")`` for
the JVPs, with identities merged (:func:`tnconv.symbolic.derive.vjp_network`). Extra leading
dimensions of the vector (or tangent) become one batch leg ``m`` of the network, so many
products are one contraction.

Example:
    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    >>> v = torch.randn(2, 4, 6, 6)
    >>> g = tnconv.conv_input_vjp(w, v, x.shape)
    >>> torch.allclose(g, torch.nn.grad.conv2d_input(x.shape, w, v), atol=1e-4)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..caching import cached
from ..execute import ops
from ..execute.autodiff import contract
from ..spec.validation import (
    IntOrTuple,
    Padding,
    check_same_dtype_device,
    check_tensor,
    normalize_groups,
    normalize_tuple,
)
from ..symbolic.builders.conv import conv_network
from ..symbolic.derive import jvp_network, vjp_network
from ..symbolic.network import TensorNetwork


def _split_lead(shape: Sequence[int], trailing: int) -> tuple[tuple[int, ...], int | None]:
    """The extra leading dimensions of ``shape`` beyond its ``trailing`` dims and their product
    (``None`` when there are none)."""
    lead = tuple(shape[: len(shape) - trailing])
    return lead, (math.prod(lead) if lead else None)


def _check_vector(v_shape: Sequence[int], expected: tuple[int, ...], what: str) -> None:
    if tuple(v_shape[len(v_shape) - len(expected) :]) != expected or len(v_shape) < len(expected):
        raise ValueError(
            f"v must have shape [*, {', '.join(map(str, expected))}] (the {what}, with optional leading "
            f"dimensions), got {tuple(v_shape)}"
        )


def _contract_batched(
    network: TensorNetwork, lead: tuple[int, ...], strategy: str, **tensors: torch.Tensor
) -> torch.Tensor:
    """Contract ``network``; extra leading dimensions ``lead`` of the vector are its batch leg."""
    if lead:
        tensors = {name: t.reshape(network.input_shape(name)) for name, t in tensors.items()}
    result = contract(network, strategy, **tensors)
    return result.reshape(lead + tuple(result.shape[1:])) if lead else result


@cached(maxsize=4096)
def _input_vjp_plan(weight_shape, v_shape, input_size, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    """Validate the shapes of :func:`conv_input_vjp` once per signature: (network, leading dims of v)."""
    dims = len(weight_shape) - 2
    if len(v_shape) < dims + 2:
        raise ValueError(
            f"v must have shape [*, N, C_out, O_1..O_{dims}] (at least {dims + 2} dimensions for a {dims}-d "
            f"weight), got {tuple(v_shape)}"
        )
    sizes = _shape_tuple(input_size, "input_size")
    batch_size = v_shape[len(v_shape) - dims - 2]
    # a bad ``groups`` is reported by conv_network below
    in_channels = weight_shape[1] * groups if isinstance(groups, int) and groups > 0 else weight_shape[1]
    if len(sizes) == dims + 2:
        if sizes[0] != batch_size:
            raise ValueError(f"v has batch size {batch_size} but input_size={sizes} says {sizes[0]}")
        in_channels, sizes = sizes[1], sizes[2:]
    elif len(sizes) != dims:
        raise ValueError(
            f"input_size must be [N, C_in, I_1..I_{dims}] or [I_1..I_{dims}] for a {dims}-d weight, got {sizes}"
        )
    input_shape = (batch_size, in_channels) + sizes
    network = conv_network(input_shape, tuple(weight_shape), stride, padding, dilation, groups)
    _check_vector(v_shape, network.output_shape, f"output of the convolution of an input of shape {input_shape}")
    lead, batch = _split_lead(v_shape, dims + 2)
    return vjp_network(network, "x", batch)[0], lead


def conv_input_vjp(
    weight: torch.Tensor,
    v: torch.Tensor,
    input_size: Sequence[int],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Input VJP of the convolution: ``Σ_y v · ∂y/∂x`` (= ``torch.nn.grad.conv2d_input`` for D=2).

    Args:
        weight: ``[C_out, C_in/groups, K_1, …, K_D]``.
        v: ``[*, N, C_out, O_1, …, O_D]``, shaped like the convolution's output, optionally
            with extra leading dimensions ``*`` (then all products are one contraction).
        input_size: the convolution's input shape: either all of it ``[N, C_in, I_1, …, I_D]``
            (as ``torch.nn.grad`` takes it) or only the spatial sizes ``[I_1, …, I_D]``
            (needed because with a stride several input sizes give the same output size).
        stride, padding, dilation, groups: the convolution's, as ``torch.nn.functional.conv2d``.
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

    Returns:
        ``[*, N, C_in, I_1, …, I_D]``.

    >>> import torch, tnconv
    >>> w, v = torch.randn(4, 3, 3), torch.randn(7, 2, 4, 4)     # 7 vectors at once
    >>> tnconv.conv_input_vjp(w, v, (9,), stride=2).shape
    torch.Size([7, 2, 3, 9])
    """
    check_tensor(weight, "weight", min_dim=3)
    check_tensor(v, "v")
    check_same_dtype_device(weight=weight, v=v)
    if ops.tracing():
        return _traced_input_vjp(weight, v, input_size, stride, padding, dilation, groups, strategy)
    network, lead = _input_vjp_plan(weight.shape, v.shape, input_size, stride, padding, dilation, groups)
    return _contract_batched(network, lead, strategy, w=weight, v=v)


@cached(maxsize=4096)
def _weight_vjp_plan(x_shape, v_shape, kernel_size, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
    """Validate the shapes of :func:`conv_weight_vjp` once per signature: (network, leading dims of v)."""
    dims = len(x_shape) - 2
    if len(v_shape) < dims + 2:
        raise ValueError(
            f"v must have shape [*, N, C_out, O_1..O_{dims}] (at least {dims + 2} dimensions for a {dims}-d "
            f"input), got {tuple(v_shape)}"
        )
    out_channels = v_shape[len(v_shape) - dims - 1]
    groups = normalize_groups(groups, x_shape[1], out_channels)
    weight_shape = (out_channels, x_shape[1] // groups)
    if not isinstance(kernel_size, int) and len(_shape_tuple(kernel_size, "kernel_size")) == dims + 2:
        full = _shape_tuple(kernel_size, "kernel_size")
        if full[:2] != weight_shape:
            raise ValueError(
                f"kernel_size={full} (a weight shape) does not match C_out={out_channels} of v and "
                f"C_in/groups={weight_shape[1]} of x"
            )
        kernel_size = full[2:]
    weight_shape += normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    network = conv_network(tuple(x_shape), weight_shape, stride, padding, dilation, groups)
    _check_vector(v_shape, network.output_shape, f"output of the convolution of x of shape {tuple(x_shape)}")
    lead, batch = _split_lead(v_shape, dims + 2)
    return vjp_network(network, "w", batch)[0], lead


def conv_weight_vjp(
    x: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Weight VJP of the convolution: ``Σ_y v · ∂y/∂w`` (= ``torch.nn.grad.conv2d_weight`` for D=2).

    Args:
        x: the convolution's input ``[N, C_in, I_1, …, I_D]``.
        v: ``[*, N, C_out, O_1, …, O_D]``, optionally with extra leading dimensions ``*``.
        kernel_size: an int, the D kernel sizes, or the full weight shape
            ``[C_out, C_in/groups, K_1, …, K_D]`` (as ``torch.nn.grad`` takes it).
        stride, padding, dilation, groups: the convolution's.
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

    Returns:
        ``[*, C_out, C_in/groups, K_1, …, K_D]``.

    >>> import torch, tnconv
    >>> x, v = torch.randn(2, 4, 6, 6), torch.randn(2, 6, 3, 3)
    >>> tnconv.conv_weight_vjp(x, v, 3, stride=2, padding=1, groups=2).shape
    torch.Size([6, 2, 3, 3])
    """
    check_tensor(x, "x", min_dim=3)
    check_tensor(v, "v")
    check_same_dtype_device(x=x, v=v)
    if ops.tracing():
        return _traced_weight_vjp(x, v, kernel_size, stride, padding, dilation, groups, strategy)
    network, lead = _weight_vjp_plan(x.shape, v.shape, kernel_size, stride, padding, dilation, groups)
    return _contract_batched(network, lead, strategy, x=x, v=v)


def conv_input_jvp(
    weight: torch.Tensor,
    x_dot: torch.Tensor,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Input JVP of the convolution, ``∂y/∂x · ẋ`` (the network ``conv_network(...).jvp("x")``).

    Args:
        weight: ``[C_out, C_in/groups, K_1, …, K_D]``.
        x_dot: tangent ``[*, N, C_in, I_1, …, I_D]``, optionally with extra leading dimensions.
        stride, padding, dilation, groups: the convolution's.

    Returns:
        ``[*, N, C_out, O_1, …, O_D]``.

    >>> import torch, tnconv
    >>> tnconv.conv_input_jvp(torch.randn(4, 3, 3), torch.randn(5, 2, 3, 8)).shape
    torch.Size([5, 2, 4, 6])
    """
    check_tensor(weight, "weight", min_dim=3)
    check_tensor(x_dot, "x_dot")
    check_same_dtype_device(weight=weight, x_dot=x_dot)
    dims = weight.dim() - 2
    if x_dot.dim() < dims + 2:
        raise ValueError(
            f"x_dot must have shape [*, N, C_in, I_1..I_{dims}] (at least {dims + 2} dimensions), "
            f"got {tuple(x_dot.shape)}"
        )
    if ops.tracing():  # a convolution of the tangent, its leading dimensions one batch
        flat = x_dot.reshape(-1, *x_dot.shape[x_dot.dim() - dims - 1 :])
        y = _traced_conv(flat, weight, stride, padding, dilation, groups, strategy)
        return y.reshape(*x_dot.shape[: x_dot.dim() - dims - 2], -1, *y.shape[1:])
    lead, batch = _split_lead(x_dot.shape, dims + 2)
    input_shape = tuple(x_dot.shape[x_dot.dim() - dims - 2 :])
    network = conv_network(input_shape, tuple(weight.shape), stride, padding, dilation, groups)
    return _contract_batched(jvp_network(network, "x", batch)[0], lead, strategy, x_dot=x_dot, w=weight)


def conv_weight_jvp(
    x: torch.Tensor,
    w_dot: torch.Tensor,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """Weight JVP of the convolution, ``∂y/∂w · ẇ`` (the network ``conv_network(...).jvp("w")``).

    Args:
        x: ``[N, C_in, I_1, …, I_D]``.
        w_dot: tangent ``[*, C_out, C_in/groups, K_1, …, K_D]``, optionally with extra leading
            dimensions.
        stride, padding, dilation, groups: the convolution's.

    Returns:
        ``[*, N, C_out, O_1, …, O_D]``.

    >>> import torch, tnconv
    >>> tnconv.conv_weight_jvp(torch.randn(2, 3, 8), torch.randn(5, 4, 3, 3)).shape
    torch.Size([5, 2, 4, 6])
    """
    check_tensor(x, "x", min_dim=3)
    check_tensor(w_dot, "w_dot")
    check_same_dtype_device(x=x, w_dot=w_dot)
    dims = x.dim() - 2
    if w_dot.dim() < dims + 2:
        raise ValueError(
            f"w_dot must have shape [*, C_out, C_in/groups, K_1..K_{dims}] (at least {dims + 2} dimensions), "
            f"got {tuple(w_dot.shape)}"
        )
    if ops.tracing():  # one convolution per leading index of the tangent
        flat = w_dot.reshape(-1, *w_dot.shape[w_dot.dim() - dims - 2 :])
        ys = [_traced_conv(x, t, stride, padding, dilation, groups, strategy) for t in flat.unbind(0)]
        return torch.stack(ys).reshape(*w_dot.shape[: w_dot.dim() - dims - 2], *ys[0].shape)
    lead, batch = _split_lead(w_dot.shape, dims + 2)
    weight_shape = tuple(w_dot.shape[w_dot.dim() - dims - 2 :])
    network = conv_network(tuple(x.shape), weight_shape, stride, padding, dilation, groups)
    return _contract_batched(jvp_network(network, "w", batch)[0], lead, strategy, x=x, w_dot=w_dot)


# ------------------------------------------------------------------ under torch.compile / jit.trace
def _options(stride, padding, dilation, groups, strategy, dims):  # type: ignore[no-untyped-def]
    pads, name = ops.padding_arguments(padding, dims)
    return ops.int_list(stride, dims), pads, name, ops.int_list(dilation, dims), groups, strategy


def _traced_conv(x, w, stride, padding, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    return ops.conv(x, w, None, *_options(stride, padding, dilation, groups, strategy, w.dim() - 2))


def _traced_input_vjp(weight, v, input_size, stride, padding, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    """:func:`conv_input_vjp` as the ``tnconv::conv_input_vjp`` operator (leading dims of ``v``
    merged into its batch)."""
    dims = weight.dim() - 2
    if v.dim() < dims + 2:
        raise ValueError(f"v must have at least {dims + 2} dimensions for a {dims}-d weight, got {tuple(v.shape)}")
    sizes = [int(s) for s in (input_size if not isinstance(input_size, int) else (input_size,))]
    lead = tuple(v.shape[: v.dim() - dims - 2])
    batch, channels = v.shape[v.dim() - dims - 2], weight.shape[1] * groups
    if len(sizes) == dims + 2:
        channels, sizes = sizes[1], sizes[2:]
    full = [math.prod(lead) * batch, channels, *sizes]
    flat = v.reshape(full[0], *v.shape[v.dim() - dims - 1 :])
    out = ops.conv_input_vjp(weight, flat, full, *_options(stride, padding, dilation, groups, strategy, dims))
    return out.reshape(*lead, batch, *out.shape[1:])


def _traced_weight_vjp(x, v, kernel_size, stride, padding, dilation, groups, strategy):  # type: ignore[no-untyped-def]
    """:func:`conv_weight_vjp` as the ``tnconv::conv_weight_vjp`` operator (one per leading index of ``v``)."""
    dims = x.dim() - 2
    if v.dim() < dims + 2:
        raise ValueError(f"v must have at least {dims + 2} dimensions for a {dims}-d input, got {tuple(v.shape)}")
    kernel = ops.int_list(kernel_size, dims)
    out_channels = v.shape[v.dim() - dims - 1]
    full = kernel if len(kernel) == dims + 2 else [out_channels, x.shape[1] // groups, *kernel]
    options = _options(stride, padding, dilation, groups, strategy, dims)
    lead = tuple(v.shape[: v.dim() - dims - 2])
    if not lead:
        return ops.conv_weight_vjp(x, v, full, *options)
    flat = v.reshape(-1, *v.shape[v.dim() - dims - 2 :])
    parts = [ops.conv_weight_vjp(x, part, full, *options) for part in flat.unbind(0)]
    return torch.stack(parts).reshape(*lead, *parts[0].shape)


def _shape_tuple(value: object, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if not isinstance(value, (Sequence, torch.Size)) or isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    return normalize_tuple(value, len(value), name, minimum=1)
