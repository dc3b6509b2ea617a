"""Drop-in replacements for ``torch.nn.Unfold`` and ``torch.nn.Fold``, any number of dims.

They subclass PyTorch's modules (same arguments and ``repr``); the computation is
:func:`tnconv.unfold` / :func:`tnconv.fold`, so tuples of any length D work. With only int
arguments, ``Unfold`` takes ``D = input.dim() − 2`` and ``Fold`` takes D = 2 (as torch).

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


class Unfold(torch.nn.Unfold):
    """``torch.nn.Unfold`` (im2col) computed as a tensor network, for any D."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(torch.nn.Fold):
    """``torch.nn.Fold`` (col2im) computed as a tensor network, for any D."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)
