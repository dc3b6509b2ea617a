"""``tnconv.index_pattern``: the dense Π of a 1-D convolution, for users who want to see it."""

from __future__ import annotations

import torch

from ..execute.constants import pattern_tensor
from ..spec.geometry import pattern_of
from ..spec.validation import Padding


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
    """Dense index pattern ``Π[i, o, k]`` of a 1-D convolution (docs/reference.md §2).

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
    pattern = pattern_of(input_size, kernel_size, stride, padding, dilation)
    return pattern_tensor(pattern, dtype, torch.device(device) if device is not None else torch.device("cpu"))
