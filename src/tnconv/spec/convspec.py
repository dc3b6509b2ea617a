"""``ConvSpec``: one convolution's shapes and hyper-parameters, normalised and validated once.

A :class:`ConvSpec` is what every layer of tnconv agrees a convolution *is*: the network
builders take one, the front-ends make one from their tensors' shapes, the operation
registry and the ``tnconv draw`` command build networks from one, the benchmark's case
parser validates each case by making one, and the tests draw random ones. It is frozen and
hashable, so everything derived from it is cached on it.

Transposed convolutions are described by the convolution whose transpose they are
(:attr:`geometry` maps ``I'`` to ``O``); :attr:`input_shape`, :attr:`weight_shape` and
:attr:`output_shape` are those of the operation itself, in PyTorch's layouts.

>>> spec = ConvSpec.conv((8, 6, 32, 32), (12, 3, 3, 3), stride=2, padding=1, groups=2)
>>> spec.output_shape, spec.in_per_group, spec.out_per_group
((8, 12, 16, 16), 3, 6)
>>> ConvSpec.conv_transpose((1, 4, 3), (4, 2, 3), stride=2, groups=2).output_shape
(1, 4, 7)
>>> ConvSpec.create(dims=1, input_size=9, kernel_size=3, stride=2).weight_shape
(4, 4, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..caching import cached
from .geometry import ConvGeometry, conv_geometry, conv_transpose_geometry
from .pattern import IndexPattern
from .validation import IntOrTuple, Padding, as_int, normalize_groups, normalize_tuple, shape_tuple


@dataclass(frozen=True)
class ConvSpec:
    """A (transposed) convolution, validated.

    Attributes:
        batch: ``N``.
        in_channels: ``C_in`` of the operation's input.
        out_channels: ``C_out`` of its output.
        groups: ``G``.
        geometry: the spatial geometry of the forward convolution (``I → O``); for a
            transposed convolution, of the convolution whose transpose it is.
        transposed: whether this is a transposed convolution.
        output_padding: the transposed convolution's ``output_padding`` (for a forward
            convolution made by :meth:`create`, the one :meth:`toggled` would use).
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    geometry: ConvGeometry
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    # ------------------------------------------------------------------ factories
    @staticmethod
    def conv(
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrTuple = 1,
        padding: Padding = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
    ) -> ConvSpec:
        """The spec of ``torch.nn.functional.conv{D}d(x, w, …)`` for ``x``/``w`` of these shapes."""
        return _conv_spec(input_shape, weight_shape, stride, padding, dilation, groups)

    @staticmethod
    def conv_transpose(
        input_shape: Sequence[int],
        weight_shape: Sequence[int],
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        dilation: IntOrTuple = 1,
    ) -> ConvSpec:
        """The spec of ``torch.nn.functional.conv_transpose{D}d`` (its argument order)."""
        return _conv_transpose_spec(input_shape, weight_shape, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def create(
        *,
        dims: int = 2,
        batch: int = 2,
        in_channels: int = 4,
        out_channels: int | None = None,
        groups: int = 1,
        input_size: IntOrTuple = 8,
        kernel_size: IntOrTuple = 3,
        stride: IntOrTuple = 1,
        padding: Padding = 0,
        dilation: IntOrTuple = 1,
        output_padding: IntOrTuple = 0,
        transposed: bool = False,
    ) -> ConvSpec:
        """A spec from layer-style keywords (``out_channels`` defaults to ``in_channels``;
        ``input_size`` is the operation's input, ``O`` for a transposed convolution)."""
        dims = as_int(dims, "dims")
        if dims < 1:
            raise ValueError(f"dims must be positive, got {dims!r}")
        for name, value in (("batch", batch), ("in_channels", in_channels)):
            if as_int(value, name) < 1:
                raise ValueError(f"{name} must be positive, got {value!r}")
        out = in_channels if out_channels is None else as_int(out_channels, "out_channels")
        if out < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels!r}")
        if not isinstance(transposed, bool):
            raise TypeError(f"transposed must be a bool, got {transposed!r}")
        groups = normalize_groups(groups, in_channels, out)
        size = normalize_tuple(input_size, dims, "input_size", minimum=1)
        kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
        if transposed:
            weight = (in_channels, out // groups, *kernel)
            return ConvSpec.conv_transpose(
                (batch, in_channels, *size), weight, stride, padding, output_padding, groups, dilation
            )
        spec = ConvSpec.conv(
            (batch, in_channels, *size), (out, in_channels // groups, *kernel), stride, padding, dilation, groups
        )
        extra = normalize_tuple(output_padding, dims, "output_padding", minimum=0)
        # carried for toggled(): the transposed convolution of the same layer keywords
        return spec if not any(extra) else replace(spec, output_padding=extra)

    def layer_keywords(self) -> dict:
        """The keywords of :meth:`create` that give this spec back."""
        left, right = self.padding
        padding: object = left
        if not self.transposed and left != right:
            padding = "same"  # the only asymmetric padding users can ask for
        return {
            "dims": self.dims,
            "batch": self.batch,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "groups": self.groups,
            "input_size": self.input_size,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": padding,
            "dilation": self.dilation,
            "output_padding": self.output_padding or 0,
            "transposed": self.transposed,
        }

    def toggled(self) -> ConvSpec:
        """The transposed convolution with the same layer keywords (or, for a transposed spec,
        the convolution): channels, input size, kernel, stride, padding and dilation."""
        keywords = self.layer_keywords()
        keywords["transposed"] = not self.transposed
        return ConvSpec.create(**keywords)

    def with_batch(self, batch: int) -> ConvSpec:
        """The same convolution on a batch of ``batch`` samples."""
        return ConvSpec(
            batch, self.in_channels, self.out_channels, self.groups, self.geometry, self.transposed, self.output_padding
        )

    # ------------------------------------------------------------------ queries
    @property
    def dims(self) -> int:
        return self.geometry.dims

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self.geometry.kernel_size

    @property
    def stride(self) -> tuple[int, ...]:
        return self.geometry.stride

    @property
    def dilation(self) -> tuple[int, ...]:
        return self.geometry.dilation

    @property
    def padding(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(left, right)`` padding per dimension."""
        return self.geometry.padding_left, self.geometry.padding_right

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def input_size(self) -> tuple[int, ...]:
        """The operation's input positions (``O`` for a transposed convolution)."""
        return self.geometry.output_size if self.transposed else self.geometry.input_size

    @property
    def output_size(self) -> tuple[int, ...]:
        """The operation's output positions (``I'`` for a transposed convolution)."""
        return self.geometry.input_size if self.transposed else self.geometry.output_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.input_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """PyTorch's layout: ``[C_out, C_in/G, K…]``, transposed ``[C_in, C_out/G, K…]``."""
        if self.transposed:
            return (self.in_channels, self.out_per_group, *self.kernel_size)
        return (self.out_channels, self.in_per_group, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.output_size)

    @property
    def positions(self) -> int:
        """``∏O`` of the forward convolution (the number of windows)."""
        return math.prod(self.geometry.output_size)

    def patterns(self) -> tuple[IndexPattern, ...]:
        """One index pattern per spatial dimension (of the forward convolution)."""
        return self.geometry.patterns()


@cached(maxsize=4096)
def _conv_spec(input_shape, weight_shape, stride, padding, dilation, groups) -> ConvSpec:  # type: ignore[no-untyped-def]
    input_shape, weight_shape = shape_tuple(input_shape, "input_shape"), shape_tuple(weight_shape, "weight_shape")
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
    return ConvSpec(input_shape[0], channels, weight_shape[0], groups, geometry)


@cached(maxsize=4096)
def _conv_transpose_spec(input_shape, weight_shape, stride, padding, output_padding, groups, dilation) -> ConvSpec:  # type: ignore[no-untyped-def]
    input_shape, weight_shape = shape_tuple(input_shape, "input_shape"), shape_tuple(weight_shape, "weight_shape")
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
    extra = tuple(p - r for p, r in zip(geometry.padding_left, geometry.padding_right))
    return ConvSpec(input_shape[0], channels, weight_shape[1] * groups, groups, geometry, True, extra)
