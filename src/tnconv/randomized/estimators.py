"""The randomized VJP estimators: draw, slice, contract through the dispatcher, restore."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..execute import small_vjp
from ..execute.dispatch import contract
from ..execute.windows import gather_windows
from ..spec.validation import (
    UNSUPPORTED_DTYPES,
    IntOrTuple,
    Padding,
    check_generator,
    check_same_dtype_device,
    check_tensor,
    normalize_groups,
    normalize_padding,
    normalize_tuple,
)
from ..symbolic.builders.vjp import conv_input_vjp_network, conv_weight_vjp_network
from ..symbolic.network import TensorNetwork
from .rewrites import materialize_slices, resized, restore_output, sliced_network, windows_network
from .rows import row_input_vjp, row_weight_vjp
from .sampling import JOINT, MODES, TILES, check_keep, check_leg, check_mode, network_leg, sample
from .tiles import (
    _Geometry,
    draw_units,
    exact_input_vjp,
    exact_weight_vjp,
    tile_input_vjp,
    tile_setup,
    tile_weight_vjp,
)

#: Named legs of each VJP and the network leg they slice (``"spatial:d"`` is added per dimension).


# --------------------------------------------------------------------------- validation


# ----------------------------------------------------------------------------- sampling


# --------------------------------------------------------------------- joint positions


def _joint_positions(
    vjp: TensorNetwork, x: torch.Tensor, v: torch.Tensor, keep: float, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    windows = windows_network(vjp)
    draw = sample(windows.size(JOINT), keep, mode, generator)
    if draw is None:
        return x.new_zeros(vjp.output_shape)
    kept = draw.index(x.device)
    patterns = tuple(node.pattern for node in vjp.nodes if node.kind == "pattern")
    u = gather_windows(x, patterns, kept)  # type: ignore[arg-type]
    # the kept positions are gathered: the network over them is the windows network with a
    # shorter joint leg, an ordinary network whose plans are cached per size, not per draw
    network = resized(windows, JOINT, len(draw.indices)).scaled(draw.scale, name="keep_scale")
    result = contract(network, {"u": u, "v": v.flatten(2).index_select(2, kept)})
    return result.movedim(-1, 1).contiguous()  # [(g co), k…, ci] → the weight's [(g co), ci, k…]


def _geometry(
    kernel: tuple[int, ...], stride: IntOrTuple, padding: Padding, dilation: IntOrTuple, groups: int
) -> _Geometry:
    dims = len(kernel)
    strides = normalize_tuple(stride, dims, "stride", minimum=1)
    dilations = normalize_tuple(dilation, dims, "dilation", minimum=1)
    left, right = normalize_padding(padding, kernel, strides, dilations)
    return _Geometry(kernel, strides, left, right, dilations, groups)


def _exact(network: TensorNetwork, tensors: Mapping[str, torch.Tensor], geometry: _Geometry) -> torch.Tensor:
    """The exact VJP: straight to PyTorch's kernel when it has one (symmetric padding, D ≤ 3)."""
    if geometry.left == geometry.right and geometry.dims <= 3:
        if "x" in tensors:
            return exact_weight_vjp(
                tensors["x"],
                tensors["v"],
                network.output_shape,
                geometry.stride,
                geometry.left,
                geometry.dilation,
                geometry.groups,
            )
        return exact_input_vjp(
            network.output_shape,
            tensors["w"],
            tensors["v"],
            geometry.stride,
            geometry.left,
            geometry.dilation,
            geometry.groups,
        )
    return contract(network, tensors)


def _randomized(
    network: TensorNetwork,
    leg: str,
    tensors: Mapping[str, torch.Tensor],
    keep: float,
    mode: str,
    generator: torch.Generator | None,
    geometry: _Geometry,
) -> torch.Tensor:
    if keep == 1.0:
        return _exact(network, tensors, geometry)
    target = network_leg(leg)
    if target == TILES:
        v = tensors["v"]
        if "x" in tensors:
            x_shape, weight_shape = tuple(tensors["x"].shape), network.output_shape
        else:
            x_shape, weight_shape = network.output_shape, tuple(tensors["w"].shape)
        layout, plan = tile_setup(geometry, x_shape, tuple(v.shape), weight_shape, keep, v.element_size(), mode)
        draw = draw_units(v.shape[0], layout, keep, mode, generator)
        if draw is None:
            return v.new_zeros(network.output_shape)
        if "x" in tensors:
            return tile_weight_vjp(tensors["x"], v, network.output_shape, geometry, layout, draw, plan)
        return tile_input_vjp(tensors["w"], v, network.output_shape, geometry, layout, draw, plan)
    if target is None:
        return _joint_positions(network, tensors["x"], tensors["v"], keep, mode, generator)
    draw = sample(network.size(target), keep, mode, generator)
    if draw is None:
        first = next(iter(tensors.values()))
        return first.new_zeros(network.output_shape)
    if leg.startswith("spatial:"):  # output rows of one dimension: windows on torch's kernels
        dim = int(leg.split(":")[1]) - 1
        if "x" in tensors:
            return row_weight_vjp(tensors["x"], tensors["v"], network.output_shape, geometry, dim, draw)
        return row_input_vjp(tensors["w"], tensors["v"], network.output_shape, geometry, dim, draw)
    sliced = sliced_network(network, target, draw)
    materialized = materialize_slices(sliced, tensors)
    if materialized is None:  # pragma: no cover  (every sliced leg here is one no Π carries)
        return restore_output(contract(sliced, tensors, cache=False), sliced)
    reduced, inputs = materialized
    return restore_output(contract(reduced, inputs), sliced)


def _check_vector(network: TensorNetwork, v_shape: tuple[int, ...]) -> None:
    expected = network.input_shape("v")
    if tuple(v_shape) != expected:
        raise ValueError(f"v must have the convolution's output shape {expected}, got {tuple(v_shape)}")


# ------------------------------------------------------------------------- public VJPs
def weight_vjp_network(
    input_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The (exact) weight-VJP network, derived from the convolution's: inputs ``x``, ``v``
    (:func:`tnconv.networks.conv_weight_vjp`, with ``C_out`` read from ``v``'s shape).

    >>> weight_vjp_network((2, 3, 8), (2, 4, 6), 3).output_shape
    (4, 3, 3)
    """
    input_shape, v_shape = tuple(input_shape), tuple(v_shape)
    dims = len(input_shape) - 2
    if len(v_shape) != len(input_shape):
        raise ValueError(f"v must have {len(input_shape)} dimensions like x, got shape {v_shape}")
    kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    groups = normalize_groups(groups, input_shape[1], v_shape[1])
    weight_shape = (v_shape[1], input_shape[1] // groups, *kernel)
    return conv_weight_vjp_network(input_shape, weight_shape, stride, padding, dilation, groups)


def input_vjp_network(
    weight_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    input_size: tuple[int, ...],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The (exact) input-VJP network, derived from the convolution's: inputs ``w``, ``v``
    (:func:`tnconv.networks.conv_input_vjp`).

    ``input_size`` is ``[N, C_in, I_1…I_D]`` (as ``torch.nn.grad.conv2d_input``) or ``[I_1…I_D]``.

    >>> input_vjp_network((4, 3, 3), (2, 4, 6), (8,)).output_shape
    (2, 3, 8)
    """
    weight_shape, v_shape = tuple(weight_shape), tuple(v_shape)
    dims = len(weight_shape) - 2
    size = tuple(input_size)
    if len(v_shape) != dims + 2:
        raise ValueError(f"v must have {dims + 2} dimensions [N, C_out, O...], got shape {v_shape}")
    # C_in = C_in/groups · groups by construction: only groups' type and C_out are checked here
    groups = normalize_groups(groups, 0, weight_shape[0])
    full = (v_shape[0], weight_shape[1] * groups)
    if len(size) == dims + 2:
        if size[:2] != full:
            raise ValueError(f"input_size must start with [N, C_in] = {list(full)} for these v and weight, got {size}")
        size = size[2:]
    elif len(size) != dims:
        raise ValueError(f"input_size must have {dims} or {dims + 2} entries, got {tuple(input_size)}")
    return conv_input_vjp_network(full + size, weight_shape, stride, padding, dilation, groups)


def conv_weight_vjp(
    x: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unbiased randomized weight VJP that contracts only a random subset of ``leg``.

    Args:
        x: the convolution's input ``[N, C_in, I_1…I_D]``.
        v: the vector ``[N, C_out, O_1…O_D]`` (the gradient w.r.t. the output).
        kernel_size, stride, padding, dilation, groups: the convolution's, as
            ``torch.nn.grad.conv2d_weight``.
        keep: kept fraction in ``(0, 1]``; ``1`` gives exactly the exact VJP.
        leg: ``"spatial"`` (output positions jointly), ``"spatial:d"`` (positions of
            dimension ``d``, 1-based) or ``"batch"``.
        mode: ``"bernoulli"`` or ``"fixed"`` (see the module docstring).
        generator: ``torch.Generator`` for the draw (reproducible results).

    Returns:
        ``[C_out, C_in/groups, K_1…K_D]`` whose expectation is
        ``torch.nn.grad.conv2d_weight(x, w.shape, v, …)``.

    >>> x, v = torch.randn(4, 2, 9), torch.randn(4, 3, 7)
    >>> exact = torch.nn.grad.conv1d_weight(x, (3, 2, 3), v)
    >>> torch.allclose(conv_weight_vjp(x, v, 3, keep=1.0), exact, atol=1e-5)
    True
    >>> conv_weight_vjp(x, v, 3, keep=0.5, leg="batch", mode="fixed").shape
    torch.Size([3, 2, 3])
    """
    keep, mode = _checked(keep, mode, "x", x, v, generator)
    setup = _weight_setup(tuple(x.shape), tuple(v.shape), kernel_size, stride, padding, dilation, groups, leg)
    if keep == 1.0 and setup.kernel is not None:  # the exact VJP: torch's kernel (or small_vjp's GEMM)
        stride, padding, dilation, _, _, groups = setup.kernel
        return small_vjp.weight_vjp(v, x, setup.network.output_shape, stride, padding, dilation, groups)
    return _randomized(setup.network, leg, {"x": x, "v": v}, keep, mode, generator, setup.geometry)


def _checked(keep: object, mode: object, name: str, first: object, v: object, generator: object) -> tuple[float, str]:
    """``(keep, mode)`` once the arguments are valid: the common case (a float ``keep`` in
    ``(0, 1]``, a known mode, two tensors of one supported dtype and device, no generator or
    one on that device type) in a few comparisons, anything else through the full checks,
    which name the bad argument. (The full checks cost as much as a small layer's draw.)"""
    if (
        type(keep) is float
        and 0.0 < keep <= 1.0
        and mode in MODES
        and isinstance(first, torch.Tensor)
        and isinstance(v, torch.Tensor)
        and first.dim() >= 3
        and first.dtype == v.dtype
        and first.dtype not in UNSUPPORTED_DTYPES
        and first.device == v.device
        and (generator is None or (isinstance(generator, torch.Generator) and generator.device.type == v.device.type))
    ):
        return keep, mode  # type: ignore[return-value]
    keep, mode = check_keep(keep), check_mode(mode)
    check_tensor(first, name, min_dim=3)
    check_tensor(v, "v")
    check_same_dtype_device(**{name: first, "v": v})  # type: ignore[arg-type]
    check_generator(generator, v.device)  # type: ignore[union-attr]
    return keep, mode


@dataclass(frozen=True)
class _Setup:
    """A validated VJP network, its geometry and, when PyTorch has a kernel for it (symmetric
    padding, ``D ≤ 3``), the kernel's hyper-parameter arguments."""

    network: TensorNetwork
    geometry: _Geometry
    kernel: tuple | None

    @staticmethod
    def of(network: TensorNetwork, geometry: _Geometry) -> _Setup:
        kernel = None
        if geometry.left == geometry.right and geometry.dims <= 3:
            g = geometry
            kernel = (list(g.stride), list(g.left), list(g.dilation), False, [0] * g.dims, g.groups)
        return _Setup(network, geometry, kernel)


@cached(maxsize=256)
def _weight_setup(
    x_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    leg: str,
) -> _Setup:
    """The validated weight-VJP network and geometry of these shapes and options (cached: a
    training step's repeated calls skip the validation, which costs as much as a small
    layer's kernel)."""
    check_leg(leg, "weight", len(x_shape) - 2)
    network = weight_vjp_network(x_shape, v_shape, kernel_size, stride, padding, dilation, groups)
    _check_vector(network, v_shape)
    return _Setup.of(network, _geometry(network.output_shape[2:], stride, padding, dilation, groups))


@cached(maxsize=256)
def _input_setup(
    weight_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    input_size: tuple[int, ...],
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
    leg: str,
) -> _Setup:
    """The validated input-VJP network and geometry (cached like :func:`_weight_setup`)."""
    check_leg(leg, "input", len(weight_shape) - 2)
    network = input_vjp_network(weight_shape, v_shape, input_size, stride, padding, dilation, groups)
    _check_vector(network, v_shape)
    return _Setup.of(network, _geometry(tuple(weight_shape[2:]), stride, padding, dilation, groups))


def conv_input_vjp(
    weight: torch.Tensor,
    v: torch.Tensor,
    input_size: tuple[int, ...],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "channel",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unbiased randomized input VJP that contracts only a random subset of ``leg``.

    Args:
        weight: ``[C_out, C_in/groups, K_1…K_D]``.
        v: ``[N, C_out, O_1…O_D]``.
        input_size: ``[N, C_in, I_1…I_D]`` (as ``torch.nn.grad.conv2d_input``) or ``[I_1…I_D]``.
        stride, padding, dilation, groups: the convolution's.
        keep: kept fraction in ``(0, 1]``; ``1`` gives exactly the exact VJP.
        leg: ``"channel"`` (output channels of a group: ``co``, the same subset in every
            group), ``"group"`` (whole groups; for depthwise convolutions, where a group has
            one output channel) or ``"spatial:d"``.
        mode, generator: as :func:`conv_weight_vjp`.

    Returns:
        ``[N, C_in, I_1…I_D]`` whose expectation is ``torch.nn.grad.conv2d_input(…)``.

    >>> w, v = torch.randn(8, 2, 3, 3), torch.randn(2, 8, 6, 6)
    >>> exact = torch.nn.grad.conv2d_input((2, 2, 8, 8), w, v)
    >>> torch.allclose(conv_input_vjp(w, v, (2, 2, 8, 8), keep=1.0), exact, atol=1e-5)
    True
    >>> conv_input_vjp(w, v, (8, 8), keep=0.25, mode="fixed").shape
    torch.Size([2, 2, 8, 8])
    """
    keep, mode = _checked(keep, mode, "weight", weight, v, generator)
    size = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else input_size
    setup = _input_setup(
        tuple(weight.shape),
        tuple(v.shape),
        size,
        stride,
        padding,
        dilation,
        groups,
        leg,  # type: ignore[arg-type]
    )
    if keep == 1.0 and setup.kernel is not None:  # the exact VJP: torch's kernel (or small_vjp's GEMM)
        x = v.new_empty(setup.network.output_shape)  # never read (a broadcast view would slow the kernel down)
        return torch.ops.aten.convolution_backward(v, x, weight, None, *setup.kernel, (True, False, False))[0]
    return _randomized(setup.network, leg, {"w": weight, "v": v}, keep, mode, generator, setup.geometry)


def conv_transpose_weight_vjp(
    x: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unbiased randomized weight VJP of ``y = conv_transpose(x, w, …)`` (argument order of
    ``torch.nn.functional.conv_transpose2d``).

    A transposed convolution is the adjoint of the convolution with the same weight, so its
    weight VJP is that convolution's weight VJP with ``x`` and ``v`` exchanged:
    :func:`conv_weight_vjp` ``(v, x, …)``; ``leg`` then samples the positions (or samples)
    of ``x``. ``output_padding`` only sets the output size, which ``v`` already has.

    Returns ``[C_in, C_out/groups, K…]``, the transposed weight's shape.

    >>> x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)
    >>> v = torch.randn(2, 3, 10, 10)
    >>> xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    >>> y = torch.nn.functional.conv_transpose2d(xr, wr, stride=2, padding=1, output_padding=1)
    >>> exact = torch.autograd.grad(y, wr, v)[0]
    >>> got = conv_transpose_weight_vjp(x, v, 3, stride=2, padding=1, output_padding=1, keep=1.0)
    >>> torch.allclose(got, exact, atol=1e-4)
    True
    """
    check_tensor(x, "x", min_dim=3)
    check_tensor(v, "v")
    normalize_tuple(output_padding, x.dim() - 2, "output_padding", minimum=0)
    return conv_weight_vjp(
        v, x, kernel_size, stride, padding, dilation, groups, keep=keep, leg=leg, mode=mode, generator=generator
    )


# ------------------------------------------------------------ training with the option


__all__ = ["conv_input_vjp", "conv_transpose_weight_vjp", "conv_weight_vjp", "input_vjp_network", "weight_vjp_network"]
