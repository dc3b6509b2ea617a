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

import torch

from ..functional.unfold import fold, unfold


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
