"""Randomized backpropagation ("tensor dropout", SPEC §6): VJPs that contract only a random
subset of one summed leg, and do correspondingly less work.

A VJP is a sum over a leg ``j`` (batch, output position, output channel):
``G = Σ_j G_j``. Keeping a random subset ``K`` of the leg's values and rescaling gives an
unbiased estimate ``Ĝ = s · Σ_{j∈K} G_j``:

- ``mode="bernoulli"``: every value is kept independently with probability ``keep``,
  ``s = 1/keep`` (when nothing is kept the estimate is zero);
- ``mode="fixed"``: a uniform subset of ``ceil(keep·size)`` values, without replacement,
  ``s = size/kept``.

The subset is *sliced out* of every operand of the VJP's tensor network (Π included,
:meth:`~tnconv.network.TensorNetwork.slice`) before anything is contracted, so the
contraction shrinks with ``keep`` — unlike masking ``v``, which costs the full VJP.

Legs (``leg=``):

===============  ==============================  ===============================================
leg              weight VJP (``x``, ``v``)        input VJP (``weight``, ``v``)
===============  ==============================  ===============================================
``"spatial"``    all output positions jointly     —
``"spatial:d"``  output positions of dim ``d``    output positions of dim ``d``
``"batch"``      samples ``n``                    — (``n`` is an output leg)
``"channel"``    — (an output leg)                output channels within a group (``co``)
``"group"``      — (an output leg)                groups ``g`` (depthwise: output channels)
===============  ==============================  ===============================================

``"spatial"`` samples each of the ``∏O`` output positions (SPEC §6's estimator). The
positions are separate legs ``o_1 … o_D`` of the network, each carried by its own Π_d, so a
joint subset is not a slice of any one of them. Lifting every Π_d onto a joint position leg
keeps the network dense but multiplies its cost by the other dimensions' sizes (it saves
nothing unless ``keep < 1/O``). What really saves work is to slice the joint leg out of
the *windows* ``x·Π_1⋯Π_D``: the kept windows of ``x`` are gathered (no arithmetic), and the
remaining network ``u[n, o, k, g, ci] · v[n, g, co, o]`` (:func:`windows_network`, derived
from the VJP network) is sliced on the joint leg ``o``. Its cost is proportional to the
number of kept positions. ``"spatial:d"`` slices one ``o_d`` (on Π_d and ``v``) in the
dense network itself: a more correlated estimate (whole rows are dropped).

A slice that no Π carries (``"batch"``, ``"channel"``, ``"group"``) is materialized
(:func:`materialize_slices`): the inputs are sliced and the network shrinks to an ordinary,
smaller VJP network — which the ``"native"`` strategy hands to PyTorch's kernels. Networks
that still hold a draw's indices are contracted without entering any cache
(:func:`contract_draw`).

Example:
    >>> import torch, tnconv
    >>> x, v = torch.randn(8, 3, 16, 16), torch.randn(8, 4, 14, 14)
    >>> g = torch.Generator().manual_seed(0)
    >>> grad_w = tnconv.randomized.conv_weight_vjp(x, v, 3, keep=0.25, generator=g)
    >>> grad_w.shape
    torch.Size([4, 3, 3, 3])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from .contract import dense_operand, dense_plan
from .hyperparams import (
    IntOrTuple,
    Padding,
    check_same_dtype_device,
    check_tensor,
    normalize_groups,
    normalize_tuple,
)
from .network import Node, TensorNetwork
from .ops.conv import check_bias
from .ops.conv import conv as exact_conv
from .ops.vjp import conv_input_vjp_network, conv_weight_vjp_network
from .pattern import IndexPattern
from .simplify import simplify

MODES = ("bernoulli", "fixed")
#: Named legs of each VJP and the network leg they slice (``"spatial:d"`` is added per dimension).
WEIGHT_LEGS = {"spatial": None, "batch": "n"}
INPUT_LEGS = {"channel": "co", "group": "g"}
JOINT = "o"  # the joint output-position leg of :func:`windows_network`


# --------------------------------------------------------------------------- validation
def check_keep(keep: object, name: str = "keep") -> float:
    """``keep`` as a float in ``(0, 1]``; ``ValueError`` (naming ``name``) otherwise."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {keep!r}")
    value = float(keep)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {keep!r}")
    return value


def check_mode(mode: object, name: str = "mode") -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def legs_of(kind: str, dims: int) -> tuple[str, ...]:
    """The ``leg=`` values accepted for a ``kind`` (``"weight"`` or ``"input"``) VJP in ``dims`` dims."""
    named = WEIGHT_LEGS if kind == "weight" else INPUT_LEGS
    return tuple(named) + tuple(f"spatial:{d + 1}" for d in range(dims))


def check_leg(leg: object, kind: str, dims: int, name: str = "leg") -> str:
    options = legs_of(kind, dims)
    if leg not in options:
        raise ValueError(f"{name} must be one of {options} for the {kind} VJP of a {dims}-d convolution, got {leg!r}")
    return leg  # type: ignore[return-value]


def network_leg(leg: str) -> str | None:
    """The network leg that ``leg`` slices (``None`` for the joint ``"spatial"`` leg)."""
    if leg.startswith("spatial:"):
        return f"o{leg.split(':')[1]}"
    return {**WEIGHT_LEGS, **INPUT_LEGS}[leg]


# ----------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Draw:
    """A sampled subset of a leg: the kept positions (sorted) and the rescaling factor."""

    indices: tuple[int, ...]
    scale: float


def fixed_count(size: int, keep: float) -> int:
    """``ceil(keep·size)`` (at least 1), robust to rounding in ``keep·size``."""
    return max(1, min(size, math.ceil(keep * size - 1e-9 * size)))


def sample(size: int, keep: float, mode: str, generator: torch.Generator | None = None) -> Draw | None:
    """Draw the kept subset of a leg of ``size`` values; ``None`` when nothing is kept.

    >>> sample(10, 0.3, "fixed", torch.Generator().manual_seed(0)).scale
    3.3333333333333335
    """
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "fixed":
        count = fixed_count(size, keep)
        kept = torch.randperm(size, generator=generator, device=device)[:count]
        return Draw(tuple(sorted(kept.tolist())), size / count)
    kept = (torch.rand(size, generator=generator, device=device) < keep).nonzero().flatten()
    return Draw(tuple(kept.tolist()), 1.0 / keep) if kept.numel() else None


# --------------------------------------------------------------------- joint positions
@lru_cache(maxsize=256)
def windows_network(vjp: TensorNetwork, data: str = "x", joint: str = JOINT) -> TensorNetwork:
    """``vjp`` with the windows ``data·Π_1⋯Π_D`` absorbed into one input node ``u``.

    ``u`` carries ``data``'s first (batch) axis, the joint output-position leg ``joint``
    (size ``∏O``, row-major over ``o_1 … o_D``), the taps ``k_1 … k_D``, then ``data``'s other
    non-spatial axes (channels) — the layout :func:`gather_windows` produces. Every other
    node's output-position axes are merged into ``joint`` (a reshape, e.g. ``v[n, (g co), o]``).
    The output keeps ``vjp``'s first axis, then puts the taps before the other axes, in
    ``u``'s order, so that contracting it is a plain matrix product (no copy of ``u``):
    ``[(g co), k…, ci]`` for the weight VJP.
    """
    patterns = [node for node in vjp.nodes if node.kind == "pattern"]
    input_legs = {node.axes[0][0] for node in patterns}
    position_legs = tuple(node.axes[1][0] for node in patterns)
    taps = tuple(node.axes[2] for node in patterns)
    sizes = vjp.size_of
    source = vjp.node(data)
    lead, *channels = [axis for axis in source.axes if not set(axis) & input_legs]
    nodes = [Node("u", "input", (lead, (joint,), *taps, *channels))]
    trailing = tuple((leg,) for leg in position_legs)
    for node in vjp.nodes:
        if node.name == data or node.kind == "pattern":
            continue
        axes = node.axes
        if set(node.legs) & set(position_legs):
            if axes[-len(trailing) :] != trailing or set(node.legs[: -len(trailing)]) & set(position_legs):
                raise ValueError(f"node {node.name!r} does not carry the output positions as its trailing axes")
            axes = axes[: -len(trailing)] + ((joint,),)
        nodes.append(Node(node.name, node.kind, axes, node.pattern, node.value))
    first, *rest = vjp.output
    output = (first, *[axis for axis in rest if axis in taps], *[axis for axis in rest if axis not in taps])
    return vjp.with_nodes(
        nodes, output=tuple(output), extra_sizes={joint: math.prod(sizes[leg] for leg in position_legs)}
    )


def gather_windows(x: torch.Tensor, patterns: tuple[IndexPattern, ...], positions: torch.Tensor) -> torch.Tensor:
    """The windows of ``x`` (``[N, C, I_1…I_D]``) at the flat output ``positions``.

    Returns ``u[N, P, K_1, …, K_D, C]`` with ``u[n, p, k, c] = Σ_i x[n, c, i] Π[i, o(p), k]``:
    an index gather, no multiplication by Π. ``x`` is copied once to channels-last rows (plus
    one zero row that taps in the padding point at), so that every gathered tap is a
    contiguous row of channels; the gather costs in proportion to the kept positions.
    """
    batch, channels = x.shape[:2]
    length = math.prod(x.shape[2:])
    rows = x.new_empty((batch, length + 1, channels))
    rows[:, :length].copy_(x.reshape(batch, channels, length).transpose(1, 2))
    rows[:, length].zero_()
    index = _window_table(patterns, x.device).index_select(0, positions)
    return rows.index_select(1, index.flatten()).view(batch, positions.numel(), *index.shape[1:], channels)


@lru_cache(maxsize=256)
def _window_table(patterns: tuple[IndexPattern, ...], device: torch.device) -> torch.Tensor:
    """``[∏O, K_1, …, K_D]``: the flat input index ``Σ_d i_d·∏_{e>d} I_e`` of every window tap,
    ``∏I`` (one past the input: the zero row) for taps in the padding."""
    index = torch.zeros((), dtype=torch.long, device=device)
    inside = torch.ones((), dtype=torch.bool, device=device)
    for pattern in patterns:
        # input position S·o + Dl·k − P_l as a new (o, k) pair of axes
        o = torch.arange(pattern.output_size, device=device).view(-1, 1)
        k = torch.arange(pattern.kernel_size, device=device).view(1, -1)
        position = o * pattern.stride + k * pattern.dilation - pattern.padding
        valid = (position >= 0) & (position < pattern.input_size)
        index = index.unsqueeze(-1).unsqueeze(-1) * pattern.input_size + position.clamp(0, pattern.input_size - 1)
        inside = inside.unsqueeze(-1).unsqueeze(-1) & valid
    dims = len(patterns)
    # axes are (o_1, k_1, o_2, k_2, …): bring them to (o_1 … o_D, k_1 … k_D)
    order = (*range(0, 2 * dims, 2), *range(1, 2 * dims, 2))
    index = torch.where(inside, index, math.prod(p.input_size for p in patterns)).permute(*order)
    return index.reshape(-1, *(p.kernel_size for p in patterns)).contiguous()


def contract_draw(network: TensorNetwork, tensors: Mapping[str, torch.Tensor], presliced: bool = False) -> torch.Tensor:
    """Contract ``network``, sliced for one draw, with the dense-einsum plan.

    With ``presliced``, input tensors are given already sliced (``u`` and ``v`` of the joint
    positions); otherwise they have their full shapes and are sliced here. Neither the
    network nor its simplified form nor its plan is cached: they hold the draw's indices
    (up to ``∏O`` of them), and a cache of one entry per draw would grow with training. The
    contraction order and compiled expression are cached, keyed by shapes only
    (:func:`tnconv.contract.compiled_expression`).
    """
    network = _uncached(simplify)(network)
    plan = _uncached(dense_plan)(network)
    first = next(iter(tensors.values()))
    operands = [
        tensors[node.name].reshape([network.size(leg) for leg in node.legs])
        if presliced and node.kind == "input"
        else dense_operand(network, node, tensors, first.dtype, first.device)
        for node in plan.operands
    ]
    result = plan.expression(*operands, backend="torch").reshape(plan.output_shape)  # type: ignore[operator]
    return result * plan.scale if plan.scale != 1.0 else result


def materialize_slices(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor]
) -> tuple[TensorNetwork, dict[str, torch.Tensor]] | None:
    """``network``'s slices made concrete: the sliced legs shrink and the input tensors are
    sliced (``index_select``) to match, so the result is an ordinary, unsliced network.

    Its value is the sliced network's. It only applies when no pattern or constant carries a
    sliced leg (a sliced Π is no longer an index pattern) and every identity's two legs are
    sliced alike; ``None`` otherwise. The point: the smaller network is again a plain
    convolution VJP (e.g. over fewer samples), which the ``"native"`` strategy hands to
    PyTorch's kernels, and it carries no indices, so plans are cached per size, not per draw.
    """
    slices = dict(network.slices)
    keys = [node.key for node in network.nodes if node.kind == "input"]
    if len(set(keys)) != len(keys):
        return None
    for node in network.nodes:
        sliced = [slices.get(leg) for leg in node.legs]
        if node.kind in ("pattern", "constant") and any(kept is not None for kept in sliced):
            return None
        if node.kind == "identity" and sliced[0] != sliced[1]:
            return None
    sizes = network.size_of
    shrunk = {leg: len(slices[leg]) if leg in slices else size for leg, size in sizes.items()}
    inputs = {}
    for node in network.nodes:
        if node.kind != "input":
            continue
        tensor = tensors[node.key].reshape([sizes[leg] for leg in node.legs])
        for dim, leg in enumerate(node.legs):
            if leg in slices:
                tensor = tensor.index_select(dim, torch.tensor(slices[leg], device=tensor.device))
        inputs[node.key] = tensor.reshape([math.prod(shrunk[leg] for leg in axis) for axis in node.axes])
    reduced = TensorNetwork(network.nodes, tuple(shrunk.items()), network.output)
    return reduced, inputs


def _uncached(function):  # type: ignore[no-untyped-def]
    return getattr(function, "__wrapped__", function)


def sliced_network(network: TensorNetwork, leg: str, draw: Draw) -> TensorNetwork:
    """``network`` restricted to the drawn positions of ``leg`` and rescaled (not simplified).

    A leg tied by an identity to an output leg (``g``–``g'`` in the input VJP) is sliced on
    both sides, so no dense identity scatters the result; :func:`restore_output` puts the
    result back into the full output.
    """
    network = network.slice(leg, draw.indices)
    outputs = set(network.output_legs)
    for node in network.nodes:
        if node.kind == "identity" and leg in node.legs:
            (other,) = [partner for partner in node.legs if partner != leg]
            if other in outputs:
                network = network.slice(other, draw.indices)
    return network.scaled(draw.scale, name="keep_scale")


def restore_output(result: torch.Tensor, network: TensorNetwork) -> torch.Tensor:
    """Embed the result of a network with sliced output legs into zeros of the full output."""
    sliced = dict(network.slices)
    legs = network.output_legs
    if not any(leg in sliced for leg in legs):
        return result
    full_sizes = network.size_of
    result = result.reshape([network.size(leg) for leg in legs])
    for dim, leg in enumerate(legs):
        if leg in sliced:
            shape = list(result.shape)
            shape[dim] = full_sizes[leg]
            index = torch.tensor(sliced[leg], device=result.device)
            result = result.new_zeros(shape).index_copy_(dim, index, result)
    return result.reshape([math.prod(full_sizes[leg] for leg in axis) for axis in network.output])


def _joint_positions(
    vjp: TensorNetwork, x: torch.Tensor, v: torch.Tensor, keep: float, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    windows = windows_network(vjp)
    draw = sample(windows.size(JOINT), keep, mode, generator)
    if draw is None:
        return x.new_zeros(vjp.output_shape)
    network = sliced_network(windows, JOINT, draw)
    kept = torch.tensor(draw.indices, device=x.device)
    patterns = tuple(node.pattern for node in vjp.nodes if node.kind == "pattern")
    u = gather_windows(x, patterns, kept)  # type: ignore[arg-type]
    result = contract_draw(network, {"u": u, "v": v.flatten(2).index_select(2, kept)}, presliced=True)
    return result.movedim(-1, 1).contiguous()  # [(g co), k…, ci] → the weight's [(g co), ci, k…]


def _randomized(
    network: TensorNetwork,
    leg: str,
    tensors: Mapping[str, torch.Tensor],
    keep: float,
    mode: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if keep == 1.0:
        return network.simplify().contract(**tensors)
    target = network_leg(leg)
    if target is None:
        return _joint_positions(network, tensors["x"], tensors["v"], keep, mode, generator)
    draw = sample(network.size(target), keep, mode, generator)
    if draw is None:
        first = next(iter(tensors.values()))
        return first.new_zeros(network.output_shape)
    sliced = sliced_network(network, target, draw)
    materialized = materialize_slices(sliced, tensors)
    if materialized is None:  # a sliced Π (leg "spatial:d"): dense einsum of the sliced network
        return restore_output(contract_draw(sliced, tensors), sliced)
    reduced, inputs = materialized
    return restore_output(reduced.simplify().contract(**inputs), sliced)


def _check_vector(network: TensorNetwork, v: torch.Tensor) -> None:
    expected = network.input_shape("v")
    if tuple(v.shape) != expected:
        raise ValueError(f"v must have the convolution's output shape {expected}, got {tuple(v.shape)}")


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
    keep, mode = check_keep(keep), check_mode(mode)
    check_tensor(x, "x", min_dim=3)
    check_tensor(v, "v")
    check_same_dtype_device(x=x, v=v)
    leg = check_leg(leg, "weight", x.dim() - 2)
    network = weight_vjp_network(x.shape, v.shape, kernel_size, stride, padding, dilation, groups)
    _check_vector(network, v)
    return _randomized(network, leg, {"x": x, "v": v}, keep, mode, generator)


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
    keep, mode = check_keep(keep), check_mode(mode)
    check_tensor(weight, "weight", min_dim=3)
    check_tensor(v, "v")
    check_same_dtype_device(weight=weight, v=v)
    leg = check_leg(leg, "input", weight.dim() - 2)
    network = input_vjp_network(weight.shape, v.shape, input_size, stride, padding, dilation, groups)
    _check_vector(network, v)
    return _randomized(network, leg, {"w": weight, "v": v}, keep, mode, generator)


# ------------------------------------------------------------ training with the option
@dataclass(frozen=True)
class BackwardOptions:
    """How :func:`conv`'s backward estimates its gradients."""

    keep: float = 1.0
    leg: str = "spatial"
    mode: str = "bernoulli"
    input_keep: float = 1.0
    input_leg: str = "channel"
    generator: torch.Generator | None = None


class _RandomizedBackwardConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, options):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(input, weight)
        ctx.hyper = (stride, padding, dilation, groups)
        ctx.options = options
        ctx.has_bias = bias is not None
        return exact_conv(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        input, weight = ctx.saved_tensors
        options: BackwardOptions = ctx.options
        hyper = ctx.hyper
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = conv_input_vjp(
                weight,
                grad,
                input.shape,
                *hyper,
                keep=options.input_keep,
                leg=options.input_leg,
                mode=options.mode,
                generator=options.generator,
            )
        if ctx.needs_input_grad[1]:
            grad_weight = conv_weight_vjp(
                input,
                grad,
                weight.shape[2:],
                *hyper,
                keep=options.keep,
                leg=options.leg,
                mode=options.mode,
                generator=options.generator,
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum([d for d in range(grad.dim()) if d != 1])
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    keep: float = 0.5,
    leg: str = "spatial",
    mode: str = "bernoulli",
    input_keep: float = 1.0,
    input_leg: str = "channel",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`tnconv.conv` whose backward uses randomized VJPs.

    The forward is exact. In backward, the weight gradient is
    :func:`conv_weight_vjp` with ``keep``, ``leg``, ``mode``; the input gradient is
    :func:`conv_input_vjp` with ``input_keep`` (exact by default) and ``input_leg``; the
    bias gradient is exact. Not twice differentiable.

    >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
    >>> conv(x, w, padding=1, keep=0.25).square().sum().backward()
    >>> w.grad.shape, x.grad.shape
    (torch.Size([4, 3, 3, 3]), torch.Size([2, 3, 8, 8]))
    """
    check_tensor(input, "input", min_dim=3)
    check_tensor(weight, "weight")
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    check_bias(bias, weight.shape[0])
    dims = input.dim() - 2
    options = BackwardOptions(
        check_keep(keep),
        check_leg(leg, "weight", dims),
        check_mode(mode),
        check_keep(input_keep, "input_keep"),
        check_leg(input_leg, "input", dims, "input_leg"),
        generator,
    )
    return _RandomizedBackwardConv.apply(input, weight, bias, stride, padding, dilation, groups, options)


__all__ = [
    "BackwardOptions",
    "Draw",
    "conv",
    "conv_input_vjp",
    "conv_weight_vjp",
    "gather_windows",
    "input_vjp_network",
    "sample",
    "weight_vjp_network",
    "windows_network",
]
