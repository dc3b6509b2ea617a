"""Hypothesis strategies for random convolution cases."""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch


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

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def tensors(self, dtype=torch.float64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch, self.in_channels, *self.input_size, dtype=dtype, generator=gen)
        w = torch.randn(
            self.out_channels, self.in_channels // self.groups, *self.kernel_size, dtype=dtype, generator=gen
        )
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
    return ConvCase(
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
