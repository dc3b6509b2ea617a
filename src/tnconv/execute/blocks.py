"""Window sums along one axis as sums over blocks of positions, each position read at most once.

Column ``k`` of a window-count matrix ``M[i, k] = Σ_o Π[i, o, k]`` (see
:func:`~tnconv.execute.separable.window_count_matrix`) is 1 on the positions tap ``k`` reads:
an arithmetic progression ``a_k, a_k + S, …`` of ``n_k`` positions (``S`` the stride; for a
transposed convolution's unfold, whose data leg is ``o``, a run of consecutive ``o``). View
the axis as rows of ``S`` positions (position ``j·S + φ``: row ``j``, phase ``φ``); tap ``k``
then reads the rows ``[a_k // S, a_k // S + n_k)`` of phase ``a_k mod S``. Cutting each phase's
rows at its taps' first and last rows gives at most ``2K`` blocks that some tap reads, and

    x ×_axis M = (Σ over each block) ×_axis C

with ``C[block, k] = 1`` where tap ``k`` has the block's phase and its rows include the block.
The block sums are ``sum`` calls over (strided) views of ``x`` (each position read at most
once, in memory order along the axes after it, no multiply-add); ``C`` is a 0/1 matrix on a
reduced axis of one row per block instead of ``I``. A 3×3 layer of stride 1 and padding 1 has three
blocks (the first row, the middle, the last row): ``M``'s ``K_d`` multiply-adds per element of
``x`` become one addition.

>>> import torch, tnconv
>>> from tnconv.spec.pattern import IndexPattern
>>> pattern = IndexPattern(8, 8, 3, 1, 1, 1)  # I = O = 8, K = 3, stride 1, padding 1
>>> blocks = window_blocks(pattern, False)
>>> blocks.blocks  # (phase, first row, end row): row 0, rows 1-6, row 7
((0, 0, 1), (0, 1, 7), (0, 7, 8))
>>> m = tnconv.index_pattern(8, 3, 1, 1, 1, dtype=torch.float64).sum(1)  # M = Σ_o Π, [8, 3]
>>> c = combination_matrix(blocks, torch.float64, torch.device("cpu"))  # [3, 3]
>>> x = torch.randn(2, 8, 5, dtype=torch.float64)
>>> torch.allclose(torch.einsum("nbr,bk->nkr", block_sums(x, 1, blocks), c), torch.einsum("nir,ik->nkr", x, m))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..caching import cached
from ..spec.pattern import IndexPattern


@dataclass(frozen=True)
class WindowBlocks:
    """The blocks of one window axis (see the module docs).

    ``size`` is the axis' length, ``step`` ``S``; ``blocks`` per block ``(phase, first row,
    end row)`` — positions ``phase + S·j`` for ``j`` in the rows — in order of their first
    position; ``taps`` per tap ``(phase, first row, end row)`` of the positions it reads, or
    ``None`` for a tap that reads none. Only blocks some tap reads are kept: a position no
    window reads (between dilated taps, in a phase no tap has) is never touched.
    """

    size: int
    step: int
    blocks: tuple[tuple[int, int, int], ...]
    taps: tuple[tuple[int, int, int] | None, ...]

    @property
    def rows(self) -> int:
        """Length of the reduced axis: one row per block."""
        return len(self.blocks)

    @property
    def read(self) -> int:
        """Positions of the axis that the block sums read."""
        return sum(stop - start for _, start, stop in self.blocks)


def _reads(pattern: IndexPattern, transposed: bool, k: int) -> list[int]:
    """The positions of the data axis that tap ``k`` reads (``M[:, k]``'s ones), ascending."""
    p = pattern
    if transposed:  # data leg o: Σ_i Π[i, o, k] = 1 where the window's input index is inside
        return [o for o in range(p.output_size) if 0 <= p.input_index(o, k) < p.input_size]
    return sorted(i for o in range(p.output_size) if 0 <= (i := p.input_index(o, k)) < p.input_size)


@cached(maxsize=1024)
def window_blocks(pattern: IndexPattern, transposed: bool) -> WindowBlocks:
    """The :class:`WindowBlocks` of ``M[i, k] = Σ_o Π[i, o, k]`` (``transposed``: ``M[o, k] =
    Σ_i Π[i, o, k]``), from the hyper-parameters alone (``O(O·K)`` Python)."""
    size = pattern.output_size if transposed else pattern.input_size
    step = 1 if transposed else pattern.stride
    taps: list[tuple[int, int, int] | None] = []
    for k in range(pattern.kernel_size):
        reads = _reads(pattern, transposed, k)
        if not reads:
            taps.append(None)
            continue
        row, phase = divmod(reads[0], step)
        taps.append((phase, row, row + len(reads)))
    blocks = []
    for phase in sorted({t[0] for t in taps if t is not None}):
        runs = [t[1:] for t in taps if t is not None and t[0] == phase]
        bounds = sorted({b for run in runs for b in run})
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if any(a <= start and stop <= b for a, b in runs):  # a gap no tap of this phase reads: skipped
                blocks.append((phase, start, stop))
    blocks.sort(key=lambda b: (b[0] + step * b[1], b[0]))
    if not blocks:  # no tap reads anything: one empty block (sum 0), C's row zero
        blocks.append((0, 0, 0))
    return WindowBlocks(size, step, tuple(blocks), tuple(taps))


@cached(maxsize=256, tensors=True, bypassable=False)
def combination_matrix(blocks: WindowBlocks, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``C[block, k]`` (``[rows, K]``, 0/1): which block sums make up tap ``k``'s sum."""
    c = torch.zeros((blocks.rows, len(blocks.taps)), dtype=dtype)
    for k, tap in enumerate(blocks.taps):
        if tap is None:
            continue
        phase, start, stop = tap
        for b, (block_phase, block_start, block_stop) in enumerate(blocks.blocks):
            if block_phase == phase and start <= block_start and block_stop <= stop:
                c[b, k] = 1
    return c.to(device)


def block_sums(t: torch.Tensor, axis: int, blocks: WindowBlocks) -> torch.Tensor:
    """``t`` (``[…, I, …]``, ``I = blocks.size`` on ``axis``) with that axis replaced by the
    block sums ``[…, rows, …]``: one ``sum`` over a (strided) view per block; positions no tap
    reads are not read."""
    shape, dim = t.shape, axis
    if t.is_contiguous():  # as [lead, I, rest]: torch reduces a 3-d view faster than the same
        t, axis = t.view(math.prod(shape[:dim]), shape[dim], -1), 1  # axes kept apart (1.5× on 3-d maps)
    lead = (slice(None),) * axis
    step = blocks.step
    sums = [
        t[(*lead, slice(phase + step * start, phase + step * (stop - 1) + 1, step))].sum(axis)
        if stop > start
        else t.new_zeros((*t.shape[:axis], *t.shape[axis + 1 :]))
        for phase, start, stop in blocks.blocks
    ]
    return torch.stack(sums, axis).view(*shape[:dim], blocks.rows, *shape[dim + 1 :])


__all__ = ["WindowBlocks", "block_sums", "combination_matrix", "window_blocks"]
