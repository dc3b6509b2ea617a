"""The index pattern Π of one spatial dimension (SPEC §2), kept symbolic.

``Π[i, o, k] = 1  ⟺  i = S·o + Dl·k − P_l  and  0 ≤ i < I``.

An :class:`IndexPattern` is a small hashable record of the sizes and hyper-parameters;
the dense 0/1 tensor exists only when :meth:`IndexPattern.materialize` is called, and is
cached per ``(pattern, dtype, device)``.

Example:
    >>> import tnconv
    >>> tnconv.index_pattern(4, 2, stride=2).shape   # Π[i, o, k] with I=4, O=2, K=2
    torch.Size([4, 2, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .hyperparams import IntOrTuple, Padding, conv_geometry


@dataclass(frozen=True)
class IndexPattern:
    """Symbolic Π for one spatial dimension.

    Attributes:
        input_size: ``I``, the number of input positions.
        output_size: ``O``, the number of output positions.
        kernel_size: ``K``.
        stride: ``S``.
        dilation: ``Dl``.
        padding: ``P_l``, the left padding (the right padding only shapes ``O``).
    """

    input_size: int
    output_size: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.output_size, self.kernel_size)

    def input_index(self, o: int, k: int) -> int:
        """The input position ``S·o + Dl·k − P_l`` that output ``o`` reads through tap ``k``."""
        return self.stride * o + self.dilation * k - self.padding

    @property
    def has_padding(self) -> bool:
        """Whether some window position falls outside ``[0, I)``."""
        first = self.input_index(0, 0)
        last = self.input_index(self.output_size - 1, self.kernel_size - 1)
        return first < 0 or last >= self.input_size

    @property
    def is_identity(self) -> bool:
        """``Π = δ(i, o)`` (times a size-1 ``k``): ``K = 1, S = 1``, no offset, ``I = O``."""
        return self.kernel_size == 1 and self.stride == 1 and self.padding == 0 and self.input_size == self.output_size

    @property
    def is_non_overlapping(self) -> bool:
        """Windows neither overlap nor leave the input: ``S ≥ Dl·(K−1)+1`` and no padding."""
        return self.stride >= self.dilation * (self.kernel_size - 1) + 1 and not self.has_padding

    def materialize(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """The dense ``[I, O, K]`` 0/1 tensor (cached; do not modify it in place)."""
        return _materialize(self, dtype, torch.device(device) if device is not None else torch.device("cpu"))

    def window_sum(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """``Σ_o Π[i, o, k]`` as a dense ``[I, K]`` tensor (cached)."""
        return _window_sum(self, dtype, torch.device(device) if device is not None else torch.device("cpu"))


@lru_cache(maxsize=1024)
def _materialize(pattern: IndexPattern, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    i = torch.arange(pattern.input_size, device=device).view(-1, 1, 1)
    o = torch.arange(pattern.output_size, device=device).view(1, -1, 1)
    k = torch.arange(pattern.kernel_size, device=device).view(1, 1, -1)
    return (i == pattern.stride * o + pattern.dilation * k - pattern.padding).to(dtype)


@lru_cache(maxsize=1024)
def _window_sum(pattern: IndexPattern, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _materialize(pattern, dtype, device).sum(1)


def index_pattern(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense index pattern ``Π[i, o, k]`` of a 1-D convolution (SPEC §2).

    Args:
        input_size: ``I``.
        kernel_size: ``K``.
        stride, padding, dilation: as in ``torch.nn.functional.conv1d``
            (``padding`` may be ``'same'`` or ``'valid'``).
        dtype, device: of the returned tensor.

    Returns:
        A ``[I, O, K]`` tensor of zeros and ones (a cached tensor: clone before writing).

    >>> pi = index_pattern(3, 3, padding=1)
    >>> pi[:, 0, :]      # output 0 sees (padding, x[0], x[1])
    tensor([[0., 1., 0.],
            [0., 0., 1.],
            [0., 0., 0.]])
    """
    return pattern_of(input_size, kernel_size, stride, padding, dilation).materialize(dtype, device)


def pattern_of(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
) -> IndexPattern:
    """The symbolic :class:`IndexPattern` of a 1-D convolution, validated."""
    (pattern,) = conv_geometry(input_size, kernel_size, stride, padding, dilation, dims=1).patterns()
    return pattern
