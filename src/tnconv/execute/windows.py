"""Windows of data as views or gathers: Π applied to a tensor without multiplying by it.

``x[…, i, …] · Π[i, o, k]`` is ``x_padded[…, S·o + Dl·k, …]``: :func:`window_views` makes it
a strided view (``Tensor.unfold`` plus a dilation step), :func:`gather_windows` gathers the
windows at chosen output positions (randomized backpropagation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..caching import cached
from ..spec.pattern import IndexPattern


@dataclass(frozen=True)
class Unfold:
    """Replace fine axis ``leg`` of a data tensor by the window axes ``(o, k)``."""

    leg: str
    pattern: IndexPattern
    length: int  # positions of ``i`` kept (a prefix, after trimming)


def window_views(t: torch.Tensor, steps: dict[int, Unfold]) -> torch.Tensor:
    """``t`` with each axis ``dim`` of ``steps`` (``I`` positions, a prefix of ``length`` kept)
    replaced by ``(O, K)``: ``view[…, o, k, …] = t_padded[…, S·o + Dl·k − P, …]``.

    All padding happens in one copy of ``t`` before any window is taken, so the windows
    (overlapping views) are never materialised here; positions past the last window are
    cut off by a view, and without padding there is no copy at all.
    """
    widths = [0, 0] * (t.dim() - min(steps))
    for dim, step in steps.items():
        p = step.pattern
        footprint = p.stride * (p.output_size - 1) + p.dilation * (p.kernel_size - 1) + 1
        length = min(step.length, footprint - p.padding)  # what the windows can reach
        if length != t.shape[dim]:
            t = t.narrow(dim, 0, length)
        slot = 2 * (t.dim() - 1 - dim)
        widths[slot : slot + 2] = [p.padding, footprint - length - p.padding]
    if any(widths):
        t = F.pad(t, widths)
    for dim in sorted(steps, reverse=True):  # later axes first: earlier indices stay valid
        p = steps[dim].pattern
        t = t.unfold(dim, p.dilation * (p.kernel_size - 1) + 1, p.stride)
        if p.dilation > 1:
            t = t[..., :: p.dilation]
        t = t.movedim(-1, dim + 1)
    return t


def gather_windows(x: torch.Tensor, patterns: tuple[IndexPattern, ...], positions: torch.Tensor) -> torch.Tensor:
    """The windows of ``x`` (``[N, C, I_1…I_D]``) at the flat output ``positions``.

    Returns ``u[N, P, K_1, …, K_D, C]`` with ``u[n, p, k, c] = Σ_i x[n, c, i] Π[i, o(p), k]``:
    an index gather, no multiplication by Π. ``x`` is copied once to channels-last rows (plus
    one zero row that taps in the padding point at), so that every gathered tap is a
    contiguous row of channels; the gather costs in proportion to the kept positions.
    """
    batch, channels = x.shape[:2]
    length = math.prod(x.shape[2:])
    rows = x.new_empty((batch, length + 1, channels))
    rows[:, :length].copy_(x.reshape(batch, channels, length).transpose(1, 2))
    rows[:, length].zero_()
    index = _window_table(patterns, x.device).index_select(0, positions)
    return rows.index_select(1, index.flatten()).view(batch, positions.numel(), *index.shape[1:], channels)


@cached(maxsize=256, tensors=True, bypassable=False)
def _window_table(patterns: tuple[IndexPattern, ...], device: torch.device) -> torch.Tensor:
    """``[∏O, K_1, …, K_D]``: the flat input index ``Σ_d i_d·∏_{e>d} I_e`` of every window tap,
    ``∏I`` (one past the input: the zero row) for taps in the padding."""
    index = torch.zeros((), dtype=torch.long, device=device)
    inside = torch.ones((), dtype=torch.bool, device=device)
    for pattern in patterns:
        # input position S·o + Dl·k − P_l as a new (o, k) pair of axes
        o = torch.arange(pattern.output_size, device=device).view(-1, 1)
        k = torch.arange(pattern.kernel_size, device=device).view(1, -1)
        position = o * pattern.stride + k * pattern.dilation - pattern.padding
        valid = (position >= 0) & (position < pattern.input_size)
        index = index.unsqueeze(-1).unsqueeze(-1) * pattern.input_size + position.clamp(0, pattern.input_size - 1)
        inside = inside.unsqueeze(-1).unsqueeze(-1) & valid
    dims = len(patterns)
    # axes are (o_1, k_1, o_2, k_2, …): bring them to (o_1 … o_D, k_1 … k_D)
    order = (*range(0, 2 * dims, 2), *range(1, 2 * dims, 2))
    index = torch.where(inside, index, math.prod(p.input_size for p in patterns)).permute(*order)
    return index.reshape(-1, *(p.kernel_size for p in patterns)).contiguous()
