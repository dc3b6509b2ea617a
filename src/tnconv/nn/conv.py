"""Drop-in replacements for ``torch.nn.Conv1d/2d/3d`` and an N-d convolution module.

They subclass PyTorch's own classes, so constructor arguments, parameter names, shapes,
initialisation, ``state_dict`` and ``padding_mode`` handling are PyTorch's; only the
convolution itself is tnconv's.

Example:
    >>> import torch, tnconv
    >>> ref = torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular")
    >>> mine = tnconv.nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular")
    >>> _ = mine.load_state_dict(ref.state_dict())
    >>> x = torch.randn(2, 3, 6, 6)
    >>> torch.allclose(mine(x), ref(x), atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch.nn.modules.conv import _ConvNd

from ..hyperparams import normalize_tuple
from ..ops.conv import conv
from ..padding import pad_nd


class _TNConvForward:
    """Mixin: the convolution of a PyTorch conv module, computed by :func:`tnconv.conv`."""

    padding_mode: str
    _reversed_padding_repeated_twice: list[int]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            # torch stores F.pad's layout: (left, right) pairs, last dimension first
            pairs = self._reversed_padding_repeated_twice
            left, right = tuple(pairs[-2::-2]), tuple(pairs[::-2])
            padded = pad_nd(input, left, right, self.padding_mode)
            return conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_TNConvForward, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` computed as a tensor network (same arguments and state)."""


class Conv2d(_TNConvForward, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed as a tensor network (same arguments and state)."""


class Conv3d(_TNConvForward, torch.nn.Conv3d):
    """``torch.nn.Conv3d`` computed as a tensor network (same arguments and state)."""


class ConvNd(_TNConvForward, _ConvNd):
    """A convolution module for any number of spatial dimensions.

    Same arguments as ``torch.nn.Conv2d``; the number of dimensions is the length of
    ``kernel_size`` or, when that is an int, ``spatial_dims``. Initialisation follows
    PyTorch (Kaiming-uniform weight, uniform bias).

    >>> layer = ConvNd(2, 4, kernel_size=(3, 3, 3, 3))
    >>> layer(torch.randn(1, 2, 5, 5, 5, 5)).shape
    torch.Size([1, 4, 3, 3, 3, 3])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        spatial_dims: int | None = None,
    ) -> None:
        if spatial_dims is None:
            if isinstance(kernel_size, int):
                raise ValueError("ConvNd needs kernel_size as a tuple or spatial_dims to know the number of dimensions")
            spatial_dims = len(kernel_size)
        kernel = normalize_tuple(kernel_size, spatial_dims, "kernel_size", minimum=1)
        strides = normalize_tuple(stride, spatial_dims, "stride", minimum=1)
        dilations = normalize_tuple(dilation, spatial_dims, "dilation", minimum=1)
        pad = padding if isinstance(padding, str) else normalize_tuple(padding, spatial_dims, "padding", minimum=0)
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            strides,
            pad,
            dilations,
            False,
            (0,) * spatial_dims,
            groups,
            bias,
            padding_mode,
            device,
            dtype,  # type: ignore[arg-type]
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight, self.bias)
