"""Non-zero padding modes (``reflect``, ``replicate``, ``circular``) for any number of dims.

``torch.nn.functional.pad`` supports these modes for at most three spatial dimensions;
here every mode is an index gather per dimension, so the N-d modules can use them too.
Zero padding never appears here: index patterns make it implicit.

>>> import torch
>>> pad_nd(torch.arange(4.).view(1, 1, 4), (1,), (2,), "circular")
tensor([[[3., 0., 1., 2., 3., 0., 1.]]])
"""

from __future__ import annotations

import torch

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _source_index(size: int, left: int, right: int, mode: str, device: torch.device) -> torch.Tensor:
    index = torch.arange(-left, size + right, device=device)
    if mode == "circular":
        if left > size or right > size:
            raise ValueError(f"circular padding ({left}, {right}) must not exceed the input size {size}")
        return index % size
    if mode == "replicate":
        return index.clamp(0, size - 1)
    if mode == "reflect":
        if left >= size or right >= size:
            raise ValueError(f"reflect padding ({left}, {right}) must be smaller than the input size {size}")
        index = index.abs()
        return torch.where(index >= size, 2 * (size - 1) - index, index)
    raise ValueError(f"padding_mode must be one of {PADDING_MODES[1:]}, got {mode!r}")


def pad_nd(x: torch.Tensor, left: tuple[int, ...], right: tuple[int, ...], mode: str) -> torch.Tensor:
    """Pad the spatial dimensions of ``x`` (``[N, C, I_1, …, I_D]``) by ``left``/``right``."""
    if len(left) <= 3 and torch._C._get_tracing_state() is not None:
        # torch.jit.trace: sizes are traced tensors here; torch's own pad (same values) records cleanly
        pairs = [p for pair in zip(reversed(left), reversed(right)) for p in pair]
        return torch.nn.functional.pad(x, pairs, mode)
    for d, (pl, pr) in enumerate(zip(left, right)):
        if pl or pr:
            dim = 2 + d
            x = x.index_select(dim, _source_index(x.shape[dim], pl, pr, mode, x.device))
    return x
