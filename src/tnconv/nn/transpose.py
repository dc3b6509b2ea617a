"""Drop-in replacements for ``torch.nn.ConvTranspose1d/2d/3d`` and an N-d version.

They subclass PyTorch's classes (constructor, parameters, initialisation, ``state_dict``,
``forward(input, output_size=None)`` with torch's own ``output_size`` → ``output_padding``
logic); only the transposed convolution itself is :func:`tnconv.conv_transpose`. As in
PyTorch, only ``padding_mode='zeros'`` is allowed.

Example:
    >>> import torch, tnconv
    >>> ref = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)
    >>> mine = tnconv.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)
    >>> _ = mine.load_state_dict(ref.state_dict())
    >>> x = torch.randn(1, 4, 5, 5)
    >>> torch.allclose(mine(x, output_size=(10, 10)), ref(x, output_size=(10, 10)), atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.modules.conv import _ConvTransposeNd

from ..functional.transpose import conv_transpose
from ..spec.validation import normalize_tuple
from .fold import tnconv_name


class _TNConvTransposeForward:
    """Mixin: the forward of a PyTorch transposed-convolution module, computed by
    :func:`tnconv.conv_transpose`."""

    padding_mode: str
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    _output_padding: object
    _get_name = tnconv_name

    def forward(self, input: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only 'zeros' padding mode is supported for {type(self).__name__}")
        dims = len(self.kernel_size)
        output_padding = self._output_padding(  # type: ignore[operator]
            input,
            None if output_size is None else list(output_size),
            list(self.stride),
            list(self.padding),
            list(self.kernel_size),
            dims,
            list(self.dilation),
        )
        batched = input.dim() == dims + 2
        x = input if batched else input.unsqueeze(0)
        y = conv_transpose(
            x, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
        return y if batched else y.squeeze(0)


class ConvTranspose1d(_TNConvTransposeForward, torch.nn.ConvTranspose1d):
    """``torch.nn.ConvTranspose1d`` computed as a tensor network (same arguments and state)."""


class ConvTranspose2d(_TNConvTransposeForward, torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed as a tensor network (same arguments and state)."""


class ConvTranspose3d(_TNConvTransposeForward, torch.nn.ConvTranspose3d):
    """``torch.nn.ConvTranspose3d`` computed as a tensor network (same arguments and state)."""


class ConvTransposeNd(_TNConvTransposeForward, _ConvTransposeNd):
    """A transposed-convolution module for any number of spatial dimensions.

    Same arguments as ``torch.nn.ConvTranspose2d``; the number of dimensions is the length
    of ``kernel_size`` or, when that is an int, ``spatial_dims``. Initialisation follows
    PyTorch.

    >>> layer = ConvTransposeNd(2, 4, kernel_size=(2, 2, 2, 2), stride=2)
    >>> layer(torch.randn(1, 2, 3, 3, 3, 3)).shape
    torch.Size([1, 4, 6, 6, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, ...] = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        spatial_dims: int | None = None,
    ) -> None:
        if spatial_dims is None:
            if isinstance(kernel_size, int):
                raise ValueError(
                    "ConvTransposeNd needs kernel_size as a tuple or spatial_dims to know the number of dimensions"
                )
            spatial_dims = len(kernel_size)
        super().__init__(
            in_channels,
            out_channels,
            normalize_tuple(kernel_size, spatial_dims, "kernel_size", minimum=1),
            normalize_tuple(stride, spatial_dims, "stride", minimum=1),
            normalize_tuple(padding, spatial_dims, "padding", minimum=0),
            normalize_tuple(dilation, spatial_dims, "dilation", minimum=1),
            True,
            normalize_tuple(output_padding, spatial_dims, "output_padding", minimum=0),
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
