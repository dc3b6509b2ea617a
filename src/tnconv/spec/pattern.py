"""The index pattern Π of one spatial dimension (docs/reference.md §2), kept symbolic.

``Π[i, o, k] = 1  ⟺  i = S·o + Dl·k − P_l  and  0 ≤ i < I``.

An :class:`IndexPattern` is a small hashable record of the sizes and hyper-parameters;
it holds no tensor. The dense 0/1 tensor is made (and cached) only at execution, by
:func:`tnconv.execute.constants.pattern_tensor`; users get it from :func:`tnconv.index_pattern`.

Example:
    >>> IndexPattern(4, 2, 2, stride=2)
    IndexPattern(input_size=4, output_size=2, kernel_size=2, stride=2, dilation=1, padding=0)
"""

from __future__ import annotations

from dataclasses import dataclass


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
