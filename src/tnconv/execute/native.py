"""Native execution: networks recognised as a convolution run on PyTorch's own kernels.

A network made of two data inputs and one index pattern per spatial dimension
(``D ≤ 3``; forward convolutions of any ``D``) is one of three things, told apart by which
pattern legs its inputs carry:

========================  =====================================  ==========================
kind                      inputs                                 output
========================  =====================================  ==========================
``forward``               ``X[n,(g a),i…]``, ``W[(g b),a,k…]``    ``[n,(g b),o…]``
``input_vjp``             ``V[…,(g b),o…]``, ``W[(g b),a,k…]``    ``[…,(g a),i…]``
``weight_vjp``            ``X[n,(g a),i…]``, ``V[n,(g b),o…]``    ``[(g b),a,k…]``
========================  =====================================  ==========================

Transposed convolutions and their VJPs are these same shapes with roles swapped, so they
are recognised too. Recognition is symbolic and cached per network; geometries that
PyTorch's symmetric padding cannot express (``'same'`` with even kernels, transposed
``output_padding``) are handled by explicit padding or cropping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ..caching import cached
from ..simplify.taps import trim_taps
from ..spec.pattern import IndexPattern
from ..symbolic.derive import merge_identities
from ..symbolic.network import Axes, TensorNetwork
from . import pointwise, small_vjp
from .dispatch import add_bias, register_strategy
from .windows import Unfold, window_views

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_CONV_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
_BACKWARD = torch.ops.aten.convolution_backward.default


@dataclass(frozen=True)
class NativeCall:
    """A network recognised as one PyTorch convolution kernel call."""

    kind: str  # "forward" | "input_vjp" | "weight_vjp"
    operands: tuple[str, str]  # (X, W), (V, W) or (X, V)
    patterns: tuple[IndexPattern, ...]
    groups: int
    scale: float
    output_shape: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.patterns)

    @cached_property
    def symmetric(self) -> bool:
        """Whether torch's symmetric padding ``P_l`` reproduces every output size."""
        return all(_torch_output(p) == p.output_size for p in self.patterns)

    @cached_property
    def matrix_product(self) -> bool:
        """Whether :mod:`.pointwise` evaluates this call as a matrix product instead of a
        convolution kernel: every pattern the identity (kernel 1, stride 1, no padding), and
        an input VJP on one position or a map of at least ``pointwise.MIN_MATMUL_POSITIONS``,
        or a forward pass / weight VJP on a single position."""
        if not pointwise.is_pointwise(self.patterns):
            return False
        if self.kind == "input_vjp":
            return pointwise.input_vjp_by_matmul(self.patterns)
        return math.prod(p.output_size for p in self.patterns) == 1

    @property
    def small_weight_vjp(self) -> bool:
        """Whether the weight VJP of this call (forward or transposed) may run as
        :mod:`.small_vjp`'s GEMM instead of torch's kernel (1-d, ``groups=1``; the route
        itself is decided by shape and dtype when it runs)."""
        return self.dims == 1 and self.groups == 1

    @cached_property
    def hyperparameters(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(stride, padding, dilation)`` per spatial dimension, as torch's kernels take them."""
        ps = self.patterns
        return tuple(p.stride for p in ps), tuple(p.padding for p in ps), tuple(p.dilation for p in ps)

    @cached_property
    def runner(self):  # type: ignore[no-untyped-def]
        """``(tensors, bias) -> result``: the kernel call with every argument resolved once.

        The common calls (torch's symmetric padding, no scale, ``D ≤ 3``) go straight to the
        kernel; the rest through :func:`run_native`."""
        a, b = self.operands
        stride, padding, dilation = self.hyperparameters
        groups, d = self.groups, self.dims
        if self.scale != 1.0 or not self.symmetric or d > 3:
            return lambda tensors, bias: run_native(self, tensors, bias=bias)
        if self.matrix_product and self.kind == "forward":  # one position: one (batched) GEMM
            return lambda tensors, bias: pointwise.forward_1x1(tensors[a], tensors[b], bias, groups)
        if self.matrix_product:
            return lambda tensors, bias: run_native(self, tensors, bias=bias)
        if self.kind == "forward":
            conv = _CONV[d]
            return lambda tensors, bias: conv(tensors[a], tensors[b], bias, stride, padding, dilation, groups)
        if self.kind == "weight_vjp" and d == 1 and groups == 1:  # small 1-d ones: maybe one GEMM
            shape, runners = self.output_shape, {}

            def small_weight_vjp(tensors, bias):  # type: ignore[no-untyped-def]
                v, x = tensors[b], tensors[a]
                run = runners.get(x.shape)  # (the network's one shape: resolved on the first call)
                if run is None:
                    run = runners[x.shape] = small_vjp.weight_vjp_runner(
                        x.shape, v.shape, shape, stride, padding, dilation, 1
                    )
                return add_bias(run(v, x), bias)

            return small_weight_vjp
        if self.kind == "weight_vjp":
            shape = self.output_shape
            zeros, mask = (0,) * d, (False, True, False)

            def weight_vjp(tensors, bias):  # type: ignore[no-untyped-def]
                v = tensors[b]
                weight = v.new_empty(shape)  # never read (a broadcast view would slow the kernel down)
                result = _BACKWARD(v, tensors[a], weight, None, stride, padding, dilation, False, zeros, groups, mask)
                return add_bias(result[1], bias)

            return weight_vjp
        extra = tuple(p.input_size - _footprint(p) + 2 * p.padding for p in self.patterns)
        transpose, rank = _CONV_TRANSPOSE[d], d + 2
        general = lambda tensors, bias: run_native(self, tensors, bias=bias)  # noqa: E731

        def input_vjp(tensors, bias):  # type: ignore[no-untyped-def]
            v = tensors[a]
            if v.dim() != rank:  # several leading (batch) dims
                return general(tensors, bias)
            return transpose(v, tensors[b], bias, stride, padding, extra, groups, dilation)

        return input_vjp


def _torch_output(p: IndexPattern) -> int:
    return (p.input_size + 2 * p.padding - p.dilation * (p.kernel_size - 1) - 1) // p.stride + 1


def _footprint(p: IndexPattern) -> int:
    """Length of the explicitly padded input that yields exactly ``O`` outputs without padding."""
    return p.stride * (p.output_size - 1) + p.dilation * (p.kernel_size - 1) + 1


def _channel_axis(axis: tuple[str, ...], group: str | None) -> str | None:
    """The channel leg of an axis ``(g, c)`` (or ``(c,)`` without groups), else ``None``."""
    if group is not None and len(axis) == 2 and axis[0] == group:
        return axis[1]
    if len(axis) == 1:
        return axis[0]
    return None


def _singles(legs: tuple[str, ...]) -> Axes:
    return tuple((leg,) for leg in legs)


@cached(maxsize=1024)
def recognize(network: TensorNetwork) -> NativeCall | None:
    """The :class:`NativeCall` that evaluates ``network``, or ``None`` if there is none."""
    network = merge_identities(network)
    if network.slices:
        return None
    patterns = [n for n in network.nodes if n.kind == "pattern"]
    inputs = [n for n in network.nodes if n.kind == "input"]
    others = [n for n in network.nodes if n.kind not in ("pattern", "input", "scalar")]
    dims = len(patterns)
    if others or len(inputs) != 2 or dims < 1:
        return None
    i_legs = tuple(p.legs[0] for p in patterns)
    o_legs = tuple(p.legs[1] for p in patterns)
    k_legs = tuple(p.legs[2] for p in patterns)
    if len(set(i_legs + o_legs + k_legs)) != 3 * dims:
        return None
    scale = 1.0
    for node in network.nodes:
        if node.kind == "scalar":
            scale *= node.value

    def carries(node, legs):  # type: ignore[no-untyped-def]
        return node.axes[-dims:] == _singles(legs)

    def find(legs):  # type: ignore[no-untyped-def]
        found = [n for n in inputs if carries(n, legs)]
        return found[0] if len(found) == 1 else None

    X, V, W = find(i_legs), find(o_legs), find(k_legs)
    out_spatial = network.output[-dims:] if len(network.output) >= dims else ()
    sizes = network.size_of
    found = tuple(p.pattern for p in patterns)

    def call(kind, first, second, groups):  # type: ignore[no-untyped-def]
        return NativeCall(kind, (first.key, second.key), found, groups, scale, network.output_shape)

    if W is not None and len(W.axes) == dims + 2:
        group = W.axes[0][0] if len(W.axes[0]) == 2 else None
        b, a = _channel_axis(W.axes[0], group), _channel_axis(W.axes[1], None)
        if b is None or a is None:
            return None
        chan_a = (group, a) if group else (a,)
        chan_b = (group, b) if group else (b,)
        groups = sizes[group] if group else 1
        if X is not None and out_spatial == _singles(o_legs):
            expected_x = ((X.axes[0]),) + (chan_a,) + _singles(i_legs)
            expected_out = ((X.axes[0]),) + (chan_b,) + _singles(o_legs)
            if len(X.axes[0]) == 1 and X.axes == expected_x and network.output == expected_out:
                return call("forward", X, W, groups)
        if V is not None and out_spatial == _singles(i_legs) and dims <= 3:
            lead = V.axes[: len(V.axes) - dims - 1]
            expected_v = lead + (chan_b,) + _singles(o_legs)
            if lead and V.axes == expected_v and network.output == lead + (chan_a,) + _singles(i_legs):
                return call("input_vjp", V, W, groups)
        return None
    if X is not None and V is not None and out_spatial == _singles(k_legs) and len(network.output) == dims + 2 <= 5:
        if len(X.axes) != dims + 2 or len(V.axes) != dims + 2 or X.axes[0] != V.axes[0] or len(X.axes[0]) != 1:
            return None
        group = V.axes[1][0] if len(V.axes[1]) == 2 else None
        a, b = _channel_axis(X.axes[1], group), _channel_axis(V.axes[1], group)
        if a is None or b is None or (group is not None and X.axes[1][0] != group):
            return None
        chan_b = (group, b) if group else (b,)
        if network.output[:2] == (chan_b, (a,)):
            return call("weight_vjp", X, V, sizes[group] if group else 1)
    return None


def _pad_to_footprint(x: torch.Tensor, patterns: tuple[IndexPattern, ...]) -> torch.Tensor:
    """Pad (or crop, with negative widths) ``x``'s spatial dims to the exact window footprint."""
    widths: list[int] = []
    for p in reversed(patterns):
        widths += [p.padding, _footprint(p) - p.input_size - p.padding]
    return F.pad(x, widths)


def run_native(
    call: NativeCall, tensors: Mapping[str, torch.Tensor], reshape: bool = True, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Evaluate a recognised network with PyTorch's convolution kernels.

    ``bias`` (``[C]`` of the result's channel axis; forward convolutions and input VJPs, which
    are transposed convolutions) is fused into the kernel call where torch's kernel takes one,
    instead of costing another pass over the output.
    """
    if bias is not None and (call.kind == "weight_vjp" or call.scale != 1.0):
        raise ValueError(f"bias can only be added to an unscaled forward or input-VJP network, not a {call.kind}")
    first, second = tensors[call.operands[0]], tensors[call.operands[1]]
    d, ps = call.dims, call.patterns
    stride, padding, dilation = call.hyperparameters
    if call.matrix_product:
        result = _run_pointwise(call, first, second, bias)
        if reshape and result.shape != call.output_shape:
            result = result.reshape(call.output_shape)
        return result * call.scale if call.scale != 1.0 else result
    if call.kind == "forward" and d > 3:
        result = _forward_high_dims(first, second, call, bias)
    elif call.kind == "forward":
        x, w = first, second  # W's axes are [(g b), a, k…]: already torch's weight layout
        if call.symmetric:
            result = _CONV[d](x, w, bias, stride, padding, dilation, call.groups)
        else:
            result = _CONV[d](_pad_to_footprint(x, ps), w, bias, stride, 0, dilation, call.groups)
    elif call.kind == "input_vjp":
        v, w = first, second  # W's axes are [(g b), a, k…]: torch's weight layout
        lead = v.shape[: v.dim() - d - 1]
        if len(lead) > 1:  # several leading (batch) dims: one batch for torch's kernel
            v = v.reshape(-1, *v.shape[-d - 1 :])
        channels = w.shape[1] * call.groups
        if call.symmetric:  # the input VJP is torch's transposed convolution, output_padding fixing I
            extra = tuple(p.input_size - _footprint(p) + 2 * p.padding for p in ps)
            result = _CONV_TRANSPOSE[d](v, w, bias, stride, padding, extra, call.groups, dilation)
            bias = None
        else:
            size = (v.shape[0], channels) + tuple(_footprint(p) for p in ps)
            full = _CONV_INPUT[d](size, w, v, stride, 0, dilation, call.groups)
            widths: list[int] = []
            for p in reversed(ps):
                widths += [-p.padding, p.input_size + p.padding - _footprint(p)]
            result = F.pad(full, widths)
        if len(lead) > 1:
            result = result.reshape(*lead, *result.shape[1:])
    else:
        x, v = first, second
        channels_out = v.shape[1]
        shape = (channels_out, x.shape[1] // call.groups) + tuple(p.kernel_size for p in ps)
        if not call.symmetric:
            x, padding = _pad_to_footprint(x, ps), (0,) * d
        # torch.nn.grad.conv{d}d_weight's own kernel call, without its Python argument parsing
        # (or one GEMM for a small 1-d one: small_vjp)
        result = small_vjp.weight_vjp(v, x, shape, stride, padding, dilation, call.groups)
    if bias is not None and call.kind == "input_vjp":  # not fused (explicitly padded geometry)
        result = result + bias.view(-1, *[1] * d)
    if reshape and result.shape != call.output_shape:
        result = result.reshape(call.output_shape)
    return result * call.scale if call.scale != 1.0 else result


@cached(maxsize=1024)
def joint_backward_call(network: TensorNetwork) -> NativeCall | None:
    """The forward-convolution call whose input, weight and bias gradients one
    ``aten.convolution_backward`` computes together (as ``torch.nn.Conv*d``'s backward does),
    or ``None``: symmetric padding, ``D ≤ 3``, unscaled, two distinct operands, and not a
    pointwise layer whose input VJP runs as :mod:`.pointwise`'s matrix product (faster there)."""
    call = recognize(network)
    if call is None or call.kind != "forward" or call.scale != 1.0 or not call.symmetric or call.dims > 3:
        return None
    if call.operands[0] == call.operands[1]:
        return None
    if pointwise.is_pointwise(call.patterns) and pointwise.input_vjp_by_matmul(call.patterns):
        return None
    return call


@cached(maxsize=1024)
def torch_autograd_call(network: TensorNetwork) -> NativeCall | None:
    """The forward convolution whose derivatives torch's autograd may take over, or ``None``.

    Under ``strategy="auto"`` a first-order derivative of such a network is one call of
    torch's own kernels either way: ``aten.convolution_backward`` (all gradients together,
    :func:`joint_backward`, or one of them) for a convolution run on torch's kernel, and the
    transposed matrix products for a one-position pointwise layer run as a GEMM
    (:mod:`.pointwise`); likewise a transposed convolution run as ``F.conv_transpose{D}d``
    (an ``input_vjp`` call, whose derivatives are a convolution and a weight VJP). The
    front-ends then call :attr:`NativeCall.runner` directly (its ``F.conv{D}d``,
    ``F.conv_transpose{D}d`` or GEMM is differentiable), sparing the per-call cost of a
    Python ``autograd.Function`` (~13 µs of a 5 µs convolution on one CPU core). ``None``
    where tnconv's derivative networks take other routes: a tap trim applies first; torch's
    asymmetric or ``D > 3`` geometry; a scaled or ``x·x`` network; a pointwise layer whose
    input VJP is :mod:`.pointwise`'s matrix product on many positions (or, transposed, is
    itself one on many positions). A 1-d ``groups=1`` layer is accepted, but its weight VJP
    alone may be :mod:`.small_vjp`'s GEMM, so the front-ends hand it over only when its
    data operand requires grad (then its backward is the joint kernel call either way):
    :attr:`NativeCall.small_weight_vjp`. (They also require that ``"auto"`` runs this
    strategy first: :func:`~tnconv.execute.autodiff.native_runs_first`.)
    """
    if trim_taps(network) is not None:
        return None
    call = recognize(network)
    if call is None or call.kind == "weight_vjp" or call.scale != 1.0 or not call.symmetric or call.dims > 3:
        return None
    if call.operands[0] == call.operands[1]:
        return None
    if call.kind == "input_vjp":  # a transposed convolution: F.conv_transpose{D}d, or one position's GEMM
        one_position = math.prod(p.output_size for p in call.patterns) == 1
        return None if call.matrix_product and not one_position else call
    if call.matrix_product:
        return call
    return call if joint_backward_call(network) is not None else None


def joint_backward(
    call: NativeCall, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: tuple[bool, bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(∂x, ∂w, ∂bias)`` of :func:`joint_backward_call`'s convolution for ``grad`` (``None``
    where ``mask`` says not needed), in one kernel call."""
    stride, padding, dilation = call.hyperparameters
    zeros = (0,) * call.dims
    bias_sizes = [weight.shape[0]] if mask[2] else None
    gx, gw, gb = _BACKWARD(grad, x, weight, bias_sizes, stride, padding, dilation, False, zeros, call.groups, mask)
    return (gx if mask[0] else None), (gw if mask[1] else None), (gb if mask[2] else None)


def _run_pointwise(
    call: NativeCall, first: torch.Tensor, second: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A :attr:`NativeCall.matrix_product` call through :mod:`.pointwise` (bias added)."""
    if call.kind == "forward":
        return pointwise.forward_1x1(first, second, bias, call.groups)
    if call.kind == "weight_vjp":
        return add_bias(pointwise.weight_vjp_1x1(first, second, call.groups), bias)
    v, d = first, call.dims
    lead = v.shape[: v.dim() - d - 1]
    result = pointwise.input_vjp(second, v.reshape(-1, *v.shape[-d - 1 :]), call.groups, bias)
    return result.reshape(*lead, *result.shape[1:])


def _forward_high_dims(x: torch.Tensor, w: torch.Tensor, call: NativeCall, bias: torch.Tensor | None) -> torch.Tensor:
    """A ``D > 3`` convolution as ONE ``conv3d``: the leading ``D − 3`` dimensions are unfolded
    (strided views of the padded input), their output positions moved into the batch and
    their kernel taps into the input channels: ``[(n o…), (g c k…), i, i, i]``."""
    d, ps, groups = call.dims, call.patterns, call.groups
    lead = d - 3
    n, channels = x.shape[:2]
    views = window_views(x, {2 + j: Unfold("", ps[j], ps[j].input_size) for j in range(lead)})
    # views: [n, (g c), o1, k1, …, o_lead, k_lead, i, i, i]
    views = views.reshape(n, groups, channels // groups, *views.shape[2:])
    o_axes = [3 + 2 * j for j in range(lead)]
    k_axes = [4 + 2 * j for j in range(lead)]
    rest = list(range(3 + 2 * lead, views.dim()))
    batch = n * math.prod(p.output_size for p in ps[:lead])
    stacked = views.permute(0, *o_axes, 1, 2, *k_axes, *rest).reshape(batch, -1, *views.shape[-3:])
    kernel = w.reshape(w.shape[0], -1, *w.shape[-3:])  # [(g co), (c k_lead…), k, k, k]
    inner = NativeCall("forward", call.operands, ps[lead:], groups, 1.0, ())
    y = run_native(inner, {call.operands[0]: stacked, call.operands[1]: kernel}, reshape=False, bias=bias)
    y = y.reshape(n, *(p.output_size for p in ps[:lead]), *y.shape[1:])
    return y.permute(0, lead + 1, *range(1, lead + 1), *range(lead + 2, y.dim()))


def contract_native(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Strategy ``"native"``: PyTorch's convolution kernels, when the network is one.

    ``bias`` is fused into torch's kernel for unscaled forward convolutions and input VJPs
    (transposed convolutions), and added to the result otherwise.
    """
    call = recognize(network)
    if call is None:
        return None
    if bias is not None and (call.kind == "weight_vjp" or call.scale != 1.0):
        return add_bias(run_native(call, tensors), bias)
    return run_native(call, tensors, bias=bias)


def _bind(network: TensorNetwork):  # type: ignore[no-untyped-def]
    call = recognize(network)
    if call is None:
        return None
    if call.kind == "weight_vjp" or call.scale != 1.0:  # no bias to fuse
        runner = call.runner
        return lambda tensors, bias: add_bias(runner(tensors, None), bias)
    return call.runner


register_strategy(
    "native",
    contract_native,
    "PyTorch's convolution kernels, when the network is one",
    priority=20,
    fuses_bias=True,
    bind=_bind,
)
