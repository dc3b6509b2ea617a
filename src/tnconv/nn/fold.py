"""Drop-in replacements for ``torch.nn.Unfold`` and ``torch.nn.Fold``, any number of dims.

They subclass PyTorch's modules (same arguments; the ``repr`` says ``tnconv.nn.Unfold``);
the computation is :func:`tnconv.unfold` / :func:`tnconv.fold`, so tuples of any length D
work. With only int arguments, ``Fold`` takes D = 2 and ``Unfold`` takes D = 2 for a 3-d
(unbatched ``[C, H, W]``) or 4-d input, as torch does, and ``D = input.dim() − 2`` for
larger inputs. Unbatched inputs (``[C, I…]`` for ``Unfold``, ``[C·∏K, L]`` for ``Fold``)
give unbatched results, as torch.

Example:
    >>> import torch, tnconv
    >>> x = torch.randn(2, 3, 6, 6)
    >>> torch.allclose(tnconv.nn.Unfold(3, padding=1)(x), torch.nn.Unfold(3, padding=1)(x))
    True
    >>> tnconv.nn.Fold((4, 4, 4), 2)(torch.randn(1, 8, 27)).shape
    torch.Size([1, 1, 4, 4, 4])
"""

from __future__ import annotations

import inspect

import torch

from ..functional.unfold import fold, unfold
from ..spec.validation import as_int


def check_constructor(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
    """Before torch's constructor runs: ``kernel_size`` (an int or ints, ≥ 1), ``groups`` and
    the channel counts (ints) of a convolution module, so that a NaN or a float is a
    ``TypeError``/``ValueError`` naming the argument rather than an error of ``torch.empty``.
    Calls that do not bind to torch's signature are left to torch's own ``TypeError``."""
    base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    try:
        bound = inspect.signature(base.__init__).bind(module, *args, **kwargs).arguments
    except TypeError:
        return
    for name in ("in_channels", "out_channels", "groups"):
        if name in bound:
            as_int(bound[name], name)
    if "kernel_size" in bound:
        kernel = bound["kernel_size"]
        kernel = kernel if isinstance(kernel, (tuple, list, torch.Size)) else (kernel,)
        for k in kernel:
            if as_int(k, "kernel_size") < 1:
                raise ValueError(f"kernel_size must be positive, got {bound['kernel_size']!r}")


def tnconv_name(module: torch.nn.Module) -> str:
    """The name ``repr`` shows for a tnconv module: ``tnconv.nn.<class>``."""
    return f"tnconv.nn.{type(module).__name__}"


class Unfold(torch.nn.Unfold):
    """``torch.nn.Unfold`` (im2col) computed as a tensor network, for any D.

    >>> Unfold(2)(torch.randn(3, 4, 4)).shape       # unbatched [C, H, W], as torch
    torch.Size([12, 9])
    """

    _get_name = tnconv_name

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        arguments = (self.kernel_size, self.dilation, self.padding, self.stride)
        if isinstance(input, torch.Tensor) and input.dim() == 3 and all(isinstance(a, int) for a in arguments):
            arguments = tuple((a, a) for a in arguments)  # type: ignore[assignment]  # torch's unbatched 2-d
        return unfold(input, *arguments)


class Fold(torch.nn.Fold):
    """``torch.nn.Fold`` (col2im) computed as a tensor network, for any D."""

    _get_name = tnconv_name

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)
