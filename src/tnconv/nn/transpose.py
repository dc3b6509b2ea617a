"""Drop-in replacements for ``torch.nn.ConvTranspose1d/2d/3d`` and an N-d version.

They subclass PyTorch's classes (constructor, parameters, initialisation, ``state_dict``,
``forward(input, output_size=None)`` with torch's own ``output_size`` → ``output_padding``
logic); only the transposed convolution itself is :func:`tnconv.conv_transpose`. As in
PyTorch, only ``padding_mode='zeros'`` is allowed.

Keyword-only ``backward_keep < 1`` (with ``backward_leg``, ``backward_mode``) makes the weight
gradient an unbiased estimate (:func:`tnconv.randomized.conv_transpose`: the adjoint
convolution's weight VJP over a ``keep`` fraction of the input's (sample, tile) units); the
input and bias gradients stay exact. Plain attributes, so ``state_dict`` is torch's.

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
from ..randomized.sampling import check_keep, check_leg, check_mode
from ..randomized.training import conv_transpose as randomized_conv_transpose
from ..spec.validation import normalize_tuple
from .fold import check_constructor, tnconv_name


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
    # class-level defaults: modules unpickled from before these options existed stay exact
    backward_keep: float = 1.0
    backward_leg: str = "spatial"
    backward_mode: str = "bernoulli"

    def __init__(
        self,
        *args: object,
        backward_keep: float = 1.0,
        backward_leg: str = "spatial",
        backward_mode: str = "bernoulli",
        **kwargs: object,
    ) -> None:
        check_constructor(self, args, kwargs)  # type: ignore[arg-type]
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.backward_keep = check_keep(backward_keep, "backward_keep")
        self.backward_leg = check_leg(backward_leg, "weight", len(self.kernel_size), "backward_leg")
        self.backward_mode = check_mode(backward_mode, "backward_mode")

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
        hyper = (self.stride, self.padding, output_padding, self.groups, self.dilation)
        if self.backward_keep < 1.0:
            y = randomized_conv_transpose(
                x,
                self.weight,
                self.bias,
                *hyper,
                keep=self.backward_keep,
                leg=self.backward_leg,
                mode=self.backward_mode,
            )
        else:
            y = conv_transpose(x, self.weight, self.bias, *hyper)
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
        backward_keep: float = 1.0,
        backward_leg: str = "spatial",
        backward_mode: str = "bernoulli",
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
            backward_keep=backward_keep,
            backward_leg=backward_leg,
            backward_mode=backward_mode,
        )
