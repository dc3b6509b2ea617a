"""Drop-in replacements for ``torch.nn.Conv1d/2d/3d`` and an N-d convolution module.

They subclass PyTorch's own classes, so constructor arguments, parameter names, shapes,
initialisation, ``state_dict`` and ``padding_mode`` handling are PyTorch's; only the
convolution itself is tnconv's.

Keyword-only options train with randomized backpropagation (:mod:`tnconv.randomized`):
``backward_keep < 1`` makes the weight gradient an unbiased estimate that contracts only
that fraction of ``backward_leg`` (``"spatial"``: the tile estimator on PyTorch's kernels,
whose time falls with the kept fraction; ``"positions"``, ``"spatial:d"`` or ``"batch"``),
drawn with ``backward_mode``; ``backward_input_keep < 1`` does the same for the input
gradient over ``backward_input_leg`` (``"channel"``, ``"group"``, ``"spatial"``, ``"spatial:d"``).
The bias gradient stays exact. The options are plain attributes,
not parameters or buffers, so ``state_dict`` is still torch's.

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

from ..functional.conv import conv
from ..functional.padding import pad_nd
from ..randomized.sampling import check_keep, check_leg, check_mode
from ..randomized.training import conv as randomized_conv
from ..spec.validation import normalize_tuple
from .fold import check_constructor, tnconv_name


class _TNConvForward:
    """Mixin: the convolution of a PyTorch conv module, computed by :func:`tnconv.conv`,
    optionally with a randomized backward (:func:`tnconv.randomized.conv`)."""

    padding_mode: str
    _reversed_padding_repeated_twice: list[int]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    kernel_size: tuple[int, ...]
    # class-level defaults: modules unpickled from before these options existed stay exact
    backward_keep: float = 1.0
    backward_leg: str = "spatial"
    backward_mode: str = "bernoulli"
    backward_input_keep: float = 1.0
    backward_input_leg: str = "channel"

    def __init__(
        self,
        *args: object,
        backward_keep: float = 1.0,
        backward_leg: str = "spatial",
        backward_mode: str = "bernoulli",
        backward_input_keep: float = 1.0,
        backward_input_leg: str = "channel",
        **kwargs: object,
    ) -> None:
        check_constructor(self, args, kwargs)  # type: ignore[arg-type]
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.backward_keep = check_keep(backward_keep, "backward_keep")
        self.backward_leg = check_leg(backward_leg, "weight", len(self.kernel_size), "backward_leg")
        self.backward_mode = check_mode(backward_mode, "backward_mode")
        self.backward_input_keep = check_keep(backward_input_keep, "backward_input_keep")
        self.backward_input_leg = check_leg(backward_input_leg, "input", len(self.kernel_size), "backward_input_leg")

    @property
    def randomized_backward(self) -> bool:
        """Whether the backward pass estimates a gradient instead of computing it exactly."""
        return self.backward_keep < 1.0 or self.backward_input_keep < 1.0

    def extra_repr(self) -> str:
        text = super().extra_repr()  # type: ignore[misc]
        if self.randomized_backward:
            text += (
                f", backward_keep={self.backward_keep}, backward_leg={self.backward_leg!r}, "
                f"backward_mode={self.backward_mode!r}, backward_input_keep={self.backward_input_keep}, "
                f"backward_input_leg={self.backward_input_leg!r}"
            )
        return text

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            # torch stores F.pad's layout: (left, right) pairs, last dimension first
            pairs = self._reversed_padding_repeated_twice
            left, right = tuple(pairs[-2::-2]), tuple(pairs[::-2])
            input, padding = pad_nd(input, left, right, self.padding_mode), 0
        if not self.randomized_backward:
            return conv(input, weight, bias, self.stride, padding, self.dilation, self.groups)
        return randomized_conv(
            input,
            weight,
            bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            keep=self.backward_keep,
            leg=self.backward_leg,
            mode=self.backward_mode,
            input_keep=self.backward_input_keep,
            input_leg=self.backward_input_leg,
        )


def _forward(self: _TNConvForward, input: torch.Tensor) -> torch.Tensor:
    """torch's ``forward``, also for an unbatched ``[C_in, I…]`` input (as torch accepts)."""
    weight, bias = self.weight, self.bias  # type: ignore[attr-defined]
    if isinstance(input, torch.Tensor) and input.dim() == len(self.kernel_size) + 1:
        return self._conv_forward(input.unsqueeze(0), weight, bias).squeeze(0)
    return self._conv_forward(input, weight, bias)


# drop-in behaviour, kept apart from the options above: unbatched inputs, repr "tnconv.nn.Conv2d(...)"
_TNConvForward.forward = _forward  # type: ignore[attr-defined]
_TNConvForward._get_name = tnconv_name  # type: ignore[attr-defined]


class Conv1d(_TNConvForward, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` computed as a tensor network (same arguments and state)."""


class Conv2d(_TNConvForward, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed as a tensor network (same arguments and state)."""


class Conv3d(_TNConvForward, torch.nn.Conv3d):
    """``torch.nn.Conv3d`` computed as a tensor network (same arguments and state)."""


class ConvNd(_TNConvForward, _ConvNd):
    """A convolution module for any number of spatial dimensions.

    Same arguments as ``torch.nn.Conv2d`` (and the ``backward_*`` options of the module
    docstring); the number of dimensions is the length of ``kernel_size`` or, when that is
    an int, ``spatial_dims``. Initialisation follows PyTorch (Kaiming-uniform weight,
    uniform bias).

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
        backward_keep: float = 1.0,
        backward_leg: str = "spatial",
        backward_mode: str = "bernoulli",
        backward_input_keep: float = 1.0,
        backward_input_leg: str = "channel",
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
            backward_keep=backward_keep,
            backward_leg=backward_leg,
            backward_mode=backward_mode,
            backward_input_keep=backward_input_keep,
            backward_input_leg=backward_input_leg,
        )
