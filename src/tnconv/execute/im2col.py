"""KFC's ``J Jᵀ`` by chunked im2col into a reused buffer: one copy of each window, then GEMM.

The factor ``J`` of KFC (and KFAC-expand) is the unfolded input laid out
``[keep, outer, summed]`` = ``[G, (ci k…), (n o…)]``: every row a contiguous run of
positions, so the final ``J Jᵀ`` is one batched GEMM over well laid out operands. Here ``J``
is written **once**, by one ``copy_`` from the strided window view of ``x`` (no ``Π``, no
einsum, no permute copy afterwards), and **in chunks** into one buffer of at most the chunk
budget (:func:`~tnconv.execute.budget.get_chunk_budget`, default :data:`CHUNK_BYTES` = 32 MiB,
set with ``tnconv.chunk_budget``; read when the product runs), each chunk's product
accumulated with ``baddbmm``: chunks of whole samples, and when one sample's ``J`` alone is
over the budget (a large image at batch 1), chunks of rows of the first output dimension of
one sample. Peak extra memory is therefore the result plus one chunk of ``J`` (plus the
padded input of the samples in the chunk), never the whole unfolded input, which the unfold
recipe holds twice (``unfold`` and its permuted copy). Reusing one buffer also spares the
page faults of a fresh, large allocation.

A network qualifies when it has one data input ``x`` and only patterns, each applied to one
leg of ``x`` (``i``, a regular convolution's unfold) with its window and kernel legs open,
the batch leg of ``x`` summed between the copies, and no sliced legs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..caching import cached
from ..spec.pattern import IndexPattern
from ..symbolic.network import TensorNetwork
from .budget import CHUNK_BYTES, get_chunk_budget
from .windows import Unfold, window_views


@dataclass(frozen=True)
class Im2colPlan:
    """``x`` reshaped to ``x_shape`` (one axis per leg); ``unfolds`` the window views;
    ``order`` permutes the view's legs to ``J``'s; ``batch_axis`` is the batch leg's place
    in ``x`` (chunked) and ``chunk_axis`` its place in ``J``'s legs; ``row_unfold`` is the
    axis of ``x`` whose windows give ``J``'s axis after the batch (the rows of a row chunk),
    ``-1`` when that axis is not an output leg of a window."""

    key: str
    x_shape: tuple[int, ...]
    unfolds: tuple[tuple[int, Unfold], ...]
    order: tuple[int, ...]
    j_shape: tuple[int, ...]
    batch_axis: int
    chunk_axis: int
    row_unfold: int = -1


@cached(maxsize=1024)
def im2col_plan(network: TensorNetwork, batch_leg: str = "n") -> Im2colPlan | None:
    """The plan for ``J`` = ``network`` (output legs in ``J``'s layout), or ``None``."""
    if network.slices:
        return None
    inputs = [n for n in network.nodes if n.kind == "input"]
    others = [n for n in network.nodes if n.kind != "input"]
    if len(inputs) != 1 or not others or any(n.kind != "pattern" for n in others):
        return None  # (no pattern at all: J is the data itself, nothing to unfold)
    x = inputs[0]
    legs = list(x.legs)
    out = network.output_legs
    if len(set(legs)) != len(legs) or batch_leg not in legs or len(set(out)) != len(out):
        return None
    unfolds = []
    for node in others:
        i, o, k = node.legs
        if i not in legs or o in legs or k in legs or o not in out or k not in out or i in out:
            return None
        if any(n is not node and (i in n.legs or o in n.legs or k in n.legs) for n in others):
            return None
        unfolds.append((legs.index(i), Unfold(i, node.pattern, network.size(i)), o, k))  # type: ignore[arg-type]
    view_legs: list[str] = []
    by_axis = {axis: (o, k) for axis, _, o, k in unfolds}
    for axis, leg in enumerate(legs):
        view_legs += list(by_axis[axis]) if axis in by_axis else [leg]
    if sorted(view_legs) != sorted(out):
        return None
    order = tuple(view_legs.index(leg) for leg in out)
    row = out.index(batch_leg) + 1
    row_unfold = next((axis for axis, _, o, _ in unfolds if row < len(out) and out[row] == o), -1)
    return Im2colPlan(
        x.key,
        tuple(network.size(leg) for leg in legs),
        tuple((axis, step) for axis, step, _, _ in unfolds),
        order,
        tuple(network.size(leg) for leg in out),
        legs.index(batch_leg),
        out.index(batch_leg),
        row_unfold,
    )


def batch_chunk(plan: Im2colPlan, itemsize: int, budget: int | None = None) -> int:
    """Samples per chunk: the most whose ``J`` fits in ``budget`` bytes (at least one);
    ``budget=None``: the current chunk budget (:func:`~tnconv.execute.budget.get_chunk_budget`)."""
    if budget is None:
        budget = get_chunk_budget()
    batch = plan.j_shape[plan.chunk_axis]
    per_sample = math.prod(plan.j_shape) // batch * itemsize
    return max(1, min(batch, budget // max(1, per_sample)))


def row_chunk(plan: Im2colPlan, itemsize: int, budget: int | None = None) -> int:
    """Rows per chunk of ``J``'s axis after the batch (the first output dimension, summed like
    the batch): all of them unless one sample's ``J`` is over ``budget`` bytes, else the most
    whose ``J`` fits (at least one row). With several samples per chunk, all rows.
    ``budget=None``: the current chunk budget.

    >>> from tnconv.symbolic.builders.curvature import input_patches, _square_base
    >>> base, _ = _square_base(input_patches((1, 8, 64, 64), 3, padding=1), "expand")
    >>> g, d, n, o = base.output[1], base.output[2], base.output[0], base.output[3]
    >>> plan = im2col_plan(base.with_nodes(base.nodes, output=(g, d, n, o)))  # J: [G, C·∏K, N, ∏O]
    >>> row_chunk(plan, 4, budget=2**30), row_chunk(plan, 4, budget=2**16)  # a row: 8·9·64 floats
    (64, 3)
    """
    if budget is None:
        budget = get_chunk_budget()
    axis = plan.chunk_axis + 1
    if axis >= len(plan.j_shape) or batch_chunk(plan, itemsize, budget) > 1:
        return plan.j_shape[axis] if axis < len(plan.j_shape) else 1
    rows = plan.j_shape[axis]
    per_row = math.prod(plan.j_shape) // (plan.j_shape[plan.chunk_axis] * rows) * itemsize
    return max(1, min(rows, budget // max(1, per_row)))


def im2col_gram(
    plan: Im2colPlan,
    tensors: Mapping[str, torch.Tensor],
    gram_shape: tuple[int, int, int],
    scale: float = 1.0,
    budget: int | None = None,
) -> torch.Tensor:
    """``scale · J Jᵀ`` (``[keep, outer, outer]``) with ``J`` of ``gram_shape`` ``(keep, outer,
    summed)`` written chunk by chunk (samples, or rows of one sample: :func:`row_chunk`) into
    one buffer of at most ``budget`` bytes (``None``: the current chunk budget, read now);
    ``J Jᵀ`` is a sum over the summed legs, so the chunks' products add up."""
    x = tensors[plan.key].reshape(plan.x_shape)
    batch = x.shape[plan.batch_axis]
    keep, outer = gram_shape[0], gram_shape[1]
    if torch._C._are_functorch_transforms_active():
        # vmap/grad: no in-place writes into buffers that are not batched like x; one
        # out-of-place product (the chunking's memory bound does not hold here)
        j = window_views(x, dict(plan.unfolds)).permute(plan.order).reshape(keep, outer, -1)
        return torch.bmm(j, j.transpose(1, 2)) * scale
    budget = get_chunk_budget() if budget is None else budget
    chunk = batch_chunk(plan, x.element_size(), budget)
    rows = block_rows(plan, x.element_size(), budget)
    result = torch.zeros((keep, outer, outer), dtype=x.dtype, device=x.device)
    buffer = None
    steps = dict(plan.unfolds)
    for start in range(0, batch, chunk):
        part = x.narrow(plan.batch_axis, start, min(chunk, batch - start))
        for piece in _row_pieces(part, plan, steps, rows):
            if buffer is None or buffer.numel() < piece.numel():
                buffer = torch.empty(piece.numel(), dtype=x.dtype, device=x.device)
            block = buffer[: piece.numel()].view(piece.shape)
            block.copy_(piece)
            del piece  # (its padded rows go before the next block's are made)
            _lower_gram_(result, block.view(keep, outer, -1), scale)
    _mirror_lower_(result)
    return result


def block_rows(plan: Im2colPlan, itemsize: int, budget: int | None = None) -> int:
    """Rows per block of ``J`` as :func:`im2col_gram` cuts a chunk: within the chunk budget
    (:func:`row_chunk`) and within a padded single sample's bound (:func:`padded_rows`)."""
    return min(row_chunk(plan, itemsize, budget), padded_rows(plan))


@cached(maxsize=1024)
def padded_rows(plan: Im2colPlan) -> int:
    """Rows per chunk that keep a padded sample's peak within the unfold recipe's (symbolic, cached).

    Windows that reach into the padding are read from a zero-padded copy of the chunk's
    input. With one sample in the batch the unfold recipe holds only its ``J`` (its permute
    to the groups' layout is then a view), so one chunk's ``J`` *plus* that padded copy
    would hold more: such a sample is cut into blocks of ``r`` output rows, each padded on
    its own, with ``r`` the most for which ``J``'s block plus the block's padded input rows
    (``s·r + halo`` of them) stay within the whole ``J`` (at least one row). Without padding,
    with more samples (the recipe then copies ``J`` once more) or without a row axis: all rows.

    >>> from tnconv.symbolic.builders.curvature import input_patches, _square_base
    >>> def plan(shape, **kw):
    ...     base, _ = _square_base(input_patches(shape, 3, **kw), "expand")
    ...     g, d, n, o = base.output[1], base.output[2], base.output[0], base.output[3]
    ...     return im2col_plan(base.with_nodes(base.nodes, output=(g, d, n, o)))
    >>> padded_rows(plan((1, 96, 112, 112), stride=2, padding=1, groups=96))  # of 56 rows
    38
    >>> padded_rows(plan((1, 96, 112, 112), stride=2, groups=96))  # no padding: all rows
    55
    >>> padded_rows(plan((2, 96, 112, 112), stride=2, padding=1, groups=96))
    56
    """
    row = plan.chunk_axis + 1
    steps = dict(plan.unfolds)
    if plan.j_shape[plan.chunk_axis] != 1 or row >= len(plan.j_shape) or plan.row_unfold < 0:
        return plan.j_shape[row] if row < len(plan.j_shape) else 1
    total = plan.j_shape[row]
    if not any(step.pattern.has_padding for step in steps.values()):
        return total
    p = steps[plan.row_unfold].pattern
    halo = max(0, p.dilation * (p.kernel_size - 1) + 1 - p.stride)
    padded = 1  # elements of one padded input row: every other axis at its padded extent
    for axis, size in enumerate(plan.x_shape):
        if axis == plan.row_unfold:
            continue
        step = steps.get(axis)
        padded *= (
            size
            if step is None
            else step.pattern.stride * (step.pattern.output_size - 1)
            + (step.pattern.dilation * (step.pattern.kernel_size - 1) + 1)
        )
    j_row = math.prod(plan.j_shape) // total  # elements of J per output row
    fit = (total * j_row - halo * padded) // (j_row + p.stride * padded)
    return max(1, min(total, fit))


def _row_pieces(part: torch.Tensor, plan: Im2colPlan, steps: dict[int, Unfold], rows: int) -> Iterator[torch.Tensor]:
    """A chunk's ``J`` as window views in ``J``'s layout: whole, or per block of ``rows``
    output rows; a block's input rows (its windows' reach, halo included) are narrowed before
    the padding, so each block pads only its own rows."""
    row = plan.chunk_axis + 1
    total = plan.j_shape[row] if row < len(plan.j_shape) else 1
    if rows >= total:
        yield window_views(part, steps).permute(plan.order)
        return
    if plan.row_unfold < 0:  # J's row axis is a data axis: narrow the view
        view = window_views(part, steps).permute(plan.order)
        for r in range(0, total, rows):
            yield view.narrow(row, r, min(rows, total - r))
        return
    axis, step = plan.row_unfold, steps[plan.row_unfold]
    p = step.pattern
    for r in range(0, total, rows):
        count = min(rows, total - r)
        low = p.stride * r - p.padding  # first input row the block's windows read (may be padding)
        high = p.stride * (r + count - 1) + p.dilation * (p.kernel_size - 1) - p.padding + 1
        lo, hi = max(low, 0), min(high, step.length)
        if hi <= lo:  # the block reads only padding: its rows of J are zero
            continue
        block = IndexPattern(hi - lo, count, p.kernel_size, p.stride, p.dilation, lo - low)
        yield window_views(part.narrow(axis, lo, hi - lo), {**steps, axis: Unfold(step.leg, block, hi - lo)}).permute(
            plan.order
        )


#: Row blocks of the symmetric product (see :func:`_lower_gram_`); 1 below ``2·SYMMETRIC_ROWS`` rows.
SYMMETRIC_ROWS = 128
SYMMETRIC_BLOCKS = 8


def _row_blocks(rows: int) -> list[int]:
    blocks = max(1, min(SYMMETRIC_BLOCKS, rows // SYMMETRIC_ROWS))
    return [rows * b // blocks for b in range(blocks + 1)]


def symmetric_share(rows: int) -> float:
    """The share of ``J Jᵀ``'s GEMM flops :func:`im2col_gram` spends for ``rows`` rows of ``J``.

    >>> symmetric_share(64), symmetric_share(1024)
    (1.0, 0.5625)
    """
    blocks = len(_row_blocks(rows)) - 1
    return (blocks + 1) / (2 * blocks)


def _lower_gram_(result: torch.Tensor, j: torch.Tensor, scale: float = 1.0) -> None:
    """``result += scale · J Jᵀ`` (the scale in the GEMM's ``alpha``) on the block lower
    triangle only (row block ``b`` against the columns up to its end): ``J Jᵀ`` is
    symmetric, so with ``B`` blocks this is ``(B + 1)/(2B)`` of the GEMM's flops;
    :func:`_mirror_lower_` fills the rest once."""
    edges = _row_blocks(j.shape[1])
    for start, stop in zip(edges, edges[1:]):
        result[:, start:stop, :stop].baddbmm_(j[:, start:stop], j[:, :stop].transpose(1, 2), alpha=scale)


def _mirror_lower_(result: torch.Tensor) -> None:
    """Copy the block lower triangle written by :func:`_lower_gram_` onto the upper one."""
    edges = _row_blocks(result.shape[1])
    for start, stop in zip(edges, edges[1:]):
        result[:, start:stop, stop:] = result[:, stop:, start:stop].transpose(1, 2)


__all__ = [
    "CHUNK_BYTES",
    "Im2colPlan",
    "batch_chunk",
    "block_rows",
    "im2col_gram",
    "im2col_plan",
    "padded_rows",
    "row_chunk",
    "symmetric_share",
]
