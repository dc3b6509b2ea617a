"""Hypothesis strategies for random convolution cases."""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch

from tnconv import ConvSpec


@dataclass
class ConvCase:
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: object  # int, tuple or string, as passed to the function
    padding_tuple: tuple[int, ...]  # symmetric padding for references (None for asymmetric 'same')
    bias: bool

    @property
    def dims(self) -> int:
        return len(self.input_size)

    @property
    def spec(self) -> ConvSpec:
        """The case as tnconv's validated :class:`~tnconv.ConvSpec`."""
        return ConvSpec.create(
            dims=self.dims,
            batch=self.batch,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            groups=self.groups,
            input_size=self.input_size,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def tensors(self, dtype=torch.float64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        spec = self.spec
        x = torch.randn(spec.input_shape, dtype=dtype, generator=gen)
        w = torch.randn(spec.weight_shape, dtype=dtype, generator=gen)
        b = torch.randn(self.out_channels, dtype=dtype, generator=gen) if self.bias else None
        return x, w, b


@st.composite
def conv_cases(draw, dims=st.integers(1, 3), max_size=7, allow_same=True):
    d = draw(dims) if not isinstance(dims, int) else dims
    groups = draw(st.integers(1, 3))
    ci = draw(st.integers(1, 2))
    co = draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    style = draw(st.sampled_from(["int", "tuple", "same", "valid"] if allow_same else ["int", "tuple", "valid"]))
    if style == "same":
        stride = (1,) * d
    else:
        stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    if style == "int":
        p = draw(st.integers(0, 2))
        padding, padding_tuple = p, (p,) * d
    elif style == "tuple":
        padding_tuple = tuple(draw(st.integers(0, 2)) for _ in range(d))
        padding = padding_tuple
    else:
        padding, padding_tuple = style, (0,) * d if style == "valid" else None
    pads = padding_tuple or tuple(dl * (k - 1) // 2 for k, dl in zip(kernel, dilation))
    sizes = tuple(
        max(1, dl * (k - 1) + 1 - 2 * p) + draw(st.integers(0, max_size - 3))
        for k, dl, p in zip(kernel, dilation, pads)
    )
    case = ConvCase(
        batch=draw(st.integers(1, 3)),
        in_channels=ci * groups,
        out_channels=co * groups,
        groups=groups,
        input_size=sizes,
        kernel_size=kernel,
        stride=stride,
        dilation=dilation,
        padding=padding,
        padding_tuple=padding_tuple,
        bias=draw(st.booleans()),
    )
    case.spec  # every drawn case is a valid convolution (ValueError otherwise)
    return case


@dataclass
class ConvTransposeCase:
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    bias: bool

    @property
    def dims(self) -> int:
        return len(self.input_size)

    @property
    def output_size(self) -> tuple[int, ...]:
        return tuple(
            (o - 1) * s - 2 * p + dl * (k - 1) + op + 1
            for o, s, p, dl, k, op in zip(
                self.input_size, self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding
            )
        )

    @property
    def spec(self) -> ConvSpec:
        """The case as tnconv's validated :class:`~tnconv.ConvSpec`."""
        return ConvSpec.create(
            dims=self.dims,
            batch=self.batch,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            groups=self.groups,
            input_size=self.input_size,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            dilation=self.dilation,
        )

    def tensors(self, dtype=torch.float64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch, self.in_channels, *self.input_size, dtype=dtype, generator=gen)
        w = torch.randn(
            self.in_channels, self.out_channels // self.groups, *self.kernel_size, dtype=dtype, generator=gen
        )
        b = torch.randn(self.out_channels, dtype=dtype, generator=gen) if self.bias else None
        return x, w, b


@st.composite
def conv_transpose_cases(draw, dims=st.integers(1, 3), max_size=5, groups=st.integers(1, 3)):
    """Transposed convolutions with output_padding (< stride or < dilation, as torch allows)."""
    d = draw(dims) if not isinstance(dims, int) else dims
    g = draw(groups) if not isinstance(groups, int) else groups
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    output_padding = tuple(draw(st.integers(0, max(s, dl) - 1)) for s, dl in zip(stride, dilation))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(d))
    # the output (O-1)S - 2P + Dl(K-1) + op + 1 must be positive
    padding = tuple(
        min(draw(st.integers(0, 2)), ((o - 1) * s + dl * (k - 1) + op) // 2)
        for o, s, dl, k, op in zip(sizes, stride, dilation, kernel, output_padding)
    )
    return ConvTransposeCase(
        batch=draw(st.integers(1, 2)),
        in_channels=g * draw(st.integers(1, 2)),
        out_channels=g * draw(st.integers(1, 2)),
        groups=g,
        input_size=sizes,
        kernel_size=kernel,
        stride=stride,
        dilation=dilation,
        padding=padding,
        output_padding=output_padding,
        bias=draw(st.booleans()),
    )
