"""Tensors that are pure functions of shapes: dense index patterns, identities, constants.

They are the only tensors tnconv caches, under the byte-bounded policy of
:mod:`tnconv.caching`; do not modify them in place.

>>> from tnconv.spec import IndexPattern
>>> pattern_tensor(IndexPattern(4, 2, 2, stride=2), torch.float32, torch.device("cpu")).shape
torch.Size([4, 2, 2])
"""

from __future__ import annotations

import torch

from ..caching import cached
from ..spec.pattern import IndexPattern


@cached(maxsize=1024, tensors=True, bypassable=False)
def pattern_tensor(pattern: IndexPattern, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The dense ``[I, O, K]`` 0/1 tensor of ``pattern``."""
    i = torch.arange(pattern.input_size, device=device).view(-1, 1, 1)
    o = torch.arange(pattern.output_size, device=device).view(1, -1, 1)
    k = torch.arange(pattern.kernel_size, device=device).view(1, 1, -1)
    return (i == pattern.stride * o + pattern.dilation * k - pattern.padding).to(dtype)


@cached(maxsize=1024, tensors=True, bypassable=False)
def window_sum(pattern: IndexPattern, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``Σ_o Π[i, o, k]`` as a dense ``[I, K]`` tensor."""
    return pattern_tensor(pattern, dtype, device).sum(1)


@cached(maxsize=256, tensors=True, bypassable=False)
def identity_tensor(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``δ`` of a leg of ``size``: the ``[size, size]`` identity."""
    return torch.eye(size, dtype=dtype, device=device)


@cached(maxsize=256, tensors=True, bypassable=False)
def ones_tensor(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An all-ones vector of ``size``."""
    return torch.ones(size, dtype=dtype, device=device)
