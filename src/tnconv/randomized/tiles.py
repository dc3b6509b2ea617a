"""Tile estimators: spatial sampling whose cost falls with ``keep`` on PyTorch's own kernels.

The output positions of every sample are cut, along the first spatial dimension, into
``T`` tiles of ``B`` consecutive rows (:func:`tile_layout`). A *unit* is one (sample, tile)
pair, ``U = N·T`` of them, and the VJP is the sum of the units' contributions:
``G = Σ_u G_u``. The estimator keeps a random subset of the units (``mode="bernoulli"``:
each with probability ``p``, scale ``1/p``; ``mode="fixed"``: ``m = ceil(p·U)`` of them
without replacement, scale ``U/m``), so it is unbiased, with variance (entrywise)

- bernoulli: ``Var = (1 − p)/p · Σ_u G_u²``;
- fixed: ``Var = U²(1 − m/U)/m · S²``, ``S² = Σ_u (G_u − G/U)²/(U − 1)``.

A kept unit needs only its slab of the input, ``s·(B − 1) + d·(K − 1) + 1`` rows (the tile's
rows and a halo of ``d·(K − 1)``): the kept slabs are gathered into one batch (a copy of
about ``p·(1 + halo/(s·B))`` of ``x``, zero rows where the slab reaches into the padding)
and handed to *one* call of PyTorch's weight-VJP kernel (``aten.convolution_backward``)
with padding 0 along the tiled dimension. The work is that of the exact VJP over
``p·U`` units — ``p`` times the exact VJP, plus the halo — and no im2col buffer is built.
The input VJP (:func:`tile_input_vjp`) is the same in reverse: the kept slabs of ``v`` go
through PyTorch's input-VJP kernel and their results are added into the rows they cover.

``B`` is chosen so that the halo is at most a quarter of a slab and ``T ≤ 4``
(:func:`tile_layout`); a layer whose output has fewer rows than that has one tile per
sample, and the estimator is the batch estimator.

>>> tile_layout(32, 3, 1, 1)
TileLayout(height=8, tiles=4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..execute.dispatch import contract
from ..symbolic.builders.vjp import conv_input_vjp_network, conv_weight_vjp_network
from .sampling import Draw, sample

#: At most this many tiles per sample (more units lower the variance, but cost more copies).
MAX_TILES = 4
#: A slab's halo ``d·(K − 1)`` is at most this fraction of its ``s·B`` own rows.
HALO_FRACTION = 0.25


@dataclass(frozen=True)
class TileLayout:
    """``tiles`` tiles of ``height`` output rows each (the last may hang over the end)."""

    height: int
    tiles: int


def tile_layout(rows: int, kernel: int, stride: int, dilation: int) -> TileLayout:
    """The tiles of ``rows`` output rows of a dimension with this kernel, stride, dilation.

    ``height = max(ceil(halo / (HALO_FRACTION·stride)), ceil(rows / MAX_TILES))`` capped at
    ``rows``, with ``halo = dilation·(kernel − 1)``.

    >>> tile_layout(7, 3, 1, 1), tile_layout(56, 1, 1, 1)
    (TileLayout(height=7, tiles=1), TileLayout(height=14, tiles=4))
    """
    halo = dilation * (kernel - 1)
    height = max(1, math.ceil(halo / (HALO_FRACTION * stride)), math.ceil(rows / MAX_TILES))
    height = min(height, rows)
    return TileLayout(height, math.ceil(rows / height))


@dataclass(frozen=True)
class _Geometry:
    """Everything about the convolution that the tile estimators need (hyper-parameters normalised)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def dims(self) -> int:
        return len(self.kernel)

    def slab_rows(self, layout: TileLayout) -> int:
        return self.stride[0] * (layout.height - 1) + self.dilation[0] * (self.kernel[0] - 1) + 1

    def layout(self, out_rows: int) -> TileLayout:
        return tile_layout(out_rows, self.kernel[0], self.stride[0], self.dilation[0])


def units(batch: int, layout: TileLayout) -> int:
    """The number of units, ``N·T`` (unit ``u = t·N + n``: tile-major)."""
    return batch * layout.tiles


def draw_units(
    batch: int, layout: TileLayout, keep: float, mode: str, generator: torch.Generator | None
) -> Draw | None:
    """A draw over the ``N·T`` units (``None`` when nothing is kept)."""
    return sample(units(batch, layout), keep, mode, generator)


@dataclass(frozen=True)
class TilePlan:
    """The work of a tile weight VJP over ``kept`` units: multiply-adds of the kernel call
    (``2·C_out·C_in/G·∏K`` per output position of the kept tiles) and elements gathered
    (the kept slabs of ``x`` and of ``v``)."""

    kept: int
    flops: int
    gathered: int


def tile_plan(
    input_shape: tuple[int, ...], v_shape: tuple[int, ...], weight_shape: tuple[int, ...], geometry: _Geometry,
    kept: int,
) -> TilePlan:
    """:class:`TilePlan` of :func:`tile_weight_vjp` keeping ``kept`` units (each a full tile).

    >>> g = _Geometry((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    >>> full = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 16)
    >>> half = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 8)
    >>> half.flops * 2 == full.flops, half.gathered * 2 == full.gathered
    (True, True)
    """
    layout = geometry.layout(v_shape[2])
    positions = layout.height * math.prod(v_shape[3:])
    flops = 2 * kept * positions * math.prod(weight_shape)
    slab = input_shape[1] * geometry.slab_rows(layout) * math.prod(input_shape[3:])
    return TilePlan(kept, flops, kept * (slab + v_shape[1] * positions))


def _groups_by_tile(draw: Draw, batch: int, device: torch.device) -> list[tuple[int, torch.Tensor]]:
    """The kept units as ``(tile, samples)`` pairs (``samples`` ascending)."""
    kept = torch.tensor(draw.indices, dtype=torch.long)
    tiles = kept // batch
    result = []
    for tile in torch.unique(tiles).tolist():
        result.append((int(tile), (kept[tiles == tile] % batch).to(device)))
    return result


def _slabs(
    tensor: torch.Tensor, groups: list[tuple[int, torch.Tensor]], start_of, rows: int
) -> torch.Tensor:
    """``tensor``'s rows ``[start_of(t), start_of(t) + rows)`` along dim 2 of the kept
    samples of every tile, stacked along the batch; rows outside the tensor are zeros."""
    size = tensor.shape[2]
    pieces = []
    for tile, samples in groups:
        start = start_of(tile)
        low, high = max(start, 0), min(start + rows, size)
        piece = tensor.narrow(2, low, high - low).index_select(0, samples)
        if low > start or high < start + rows:
            pad = [0, 0] * (tensor.dim() - 3) + [low - start, start + rows - high]
            piece = F.pad(piece, pad)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _rest_padding(geometry: _Geometry) -> tuple[list[int], list[int] | None]:
    """Torch's symmetric padding for the untiled dimensions (``0`` for the tiled one), and
    the explicit ``F.pad`` amounts when some untiled dimension is padded asymmetrically."""
    left, right = geometry.left[1:], geometry.right[1:]
    if left == right:
        return [0, *left], None
    explicit: list[int] = []
    for lo, hi in zip(reversed(left), reversed(right)):
        explicit += [lo, hi]
    return [0] * geometry.dims, explicit + [0, 0]


def _torch_kernel(dims: int, device: torch.device) -> bool:
    return dims <= 3


def exact_weight_vjp(
    x: torch.Tensor, v: torch.Tensor, weight_shape: tuple[int, ...], stride, padding, dilation, groups: int
) -> torch.Tensor:
    """The exact weight VJP (symmetric ``padding`` per dimension): PyTorch's kernel for
    ``D ≤ 3``, the tnconv network otherwise."""
    dims = x.dim() - 2
    if _torch_kernel(dims, x.device):
        weight = v.new_empty(1).expand(weight_shape)
        return torch.ops.aten.convolution_backward(
            v, x, weight, None, list(stride), list(padding), list(dilation), False, [0] * dims, groups,
            (False, True, False),
        )[1]
    network = conv_weight_vjp_network(tuple(x.shape), tuple(weight_shape), stride, padding, dilation, groups)
    return contract(network, {"x": x, "v": v})


def exact_input_vjp(
    input_shape: tuple[int, ...], weight: torch.Tensor, v: torch.Tensor, stride, padding, dilation, groups: int
) -> torch.Tensor:
    """The exact input VJP (symmetric ``padding``): PyTorch's kernel for ``D ≤ 3``, the
    tnconv network otherwise."""
    dims = v.dim() - 2
    if _torch_kernel(dims, v.device):
        x = v.new_empty(1).expand(input_shape)
        return torch.ops.aten.convolution_backward(
            v, x, weight, None, list(stride), list(padding), list(dilation), False, [0] * dims, groups,
            (True, False, False),
        )[0]
    network = conv_input_vjp_network(tuple(input_shape), tuple(weight.shape), stride, padding, dilation, groups)
    return contract(network, {"w": weight, "v": v})


def _interior(geometry: _Geometry, layout: TileLayout, in_rows: int, out_rows: int) -> tuple[int, int]:
    """The tiles ``[first, last)`` whose slab lies inside ``x`` and whose rows inside ``v``."""
    s0, b, rows = geometry.stride[0], layout.height, geometry.slab_rows(layout)
    starts = [(t, s0 * t * b - geometry.left[0]) for t in range(layout.tiles)]
    inside = [t for t, start in starts if start >= 0 and start + rows <= in_rows and (t + 1) * b <= out_rows]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def _gather_interior(
    tensor: torch.Tensor, first: int, count: int, start: int, rows: int, step: int, tiles: torch.Tensor,
    samples: torch.Tensor,
) -> torch.Tensor:
    """Slabs ``tensor[n, :, start + (t − first)·step : … + rows]`` for the pairs ``(t, n)``, in
    one gather (no copy of anything but the kept slabs): ``[pairs, C, rows, …]``."""
    span = step * (count - 1) + rows
    windows = tensor.narrow(2, start, span).unfold(2, rows, step)  # [N, C, count, rest…, rows]
    dims = tensor.dim()
    windows = windows.permute(2, 0, 1, dims, *range(3, dims))  # [count, N, C, rows, rest…]
    return windows[tiles - first, samples]


def tile_weight_vjp(
    x: torch.Tensor, v: torch.Tensor, weight_shape: tuple[int, ...], geometry: _Geometry, draw: Draw
) -> torch.Tensor:
    """The weight VJP over the drawn units, rescaled: ``s · Σ_{u kept} G_u``.

    The kept units of the interior tiles (slab inside ``x``) are gathered in one step and
    go through one kernel call; those of the edge tiles (slabs reaching into the padding or
    past the end) are zero-padded and go through a second. The VJP is additive over units.
    """
    layout = geometry.layout(v.shape[2])
    batch = x.shape[0]
    s0, b, rows = geometry.stride[0], layout.height, geometry.slab_rows(layout)
    first, last = _interior(geometry, layout, x.shape[2], v.shape[2])
    kept = torch.tensor(draw.indices, dtype=torch.long)
    tiles, samples = kept // batch, kept % batch
    inner = (tiles >= first) & (tiles < last)
    padding, explicit = _rest_padding(geometry)
    result = None
    if bool(inner.any()):
        t_in, n_in = tiles[inner].to(x.device), samples[inner].to(x.device)
        count = last - first
        xs = _gather_interior(x, first, count, s0 * first * b - geometry.left[0], rows, s0 * b, t_in, n_in)
        vs = _gather_interior(v, first, count, first * b, b, b, t_in, n_in)
        if explicit is not None:
            xs = F.pad(xs, explicit)
        result = exact_weight_vjp(xs, vs, weight_shape, geometry.stride, padding, geometry.dilation, geometry.groups)
    if not bool(inner.all()):
        outer = Draw(tuple(index for index, flag in zip(draw.indices, inner.tolist()) if not flag), 1.0)
        groups = _groups_by_tile(outer, batch, x.device)
        xs = _slabs(x, groups, lambda t: s0 * t * b - geometry.left[0], rows)
        vs = _slabs(v, groups, lambda t: t * b, b)
        if explicit is not None:
            xs = F.pad(xs, explicit)
        edge = exact_weight_vjp(xs, vs, weight_shape, geometry.stride, padding, geometry.dilation, geometry.groups)
        result = edge if result is None else result + edge
    assert result is not None
    return result * draw.scale if draw.scale != 1.0 else result


def tile_input_vjp(
    weight: torch.Tensor, v: torch.Tensor, input_shape: tuple[int, ...], geometry: _Geometry, draw: Draw
) -> torch.Tensor:
    """The input VJP over the drawn units, rescaled: every kept slab of ``v`` goes through
    the input-VJP kernel, and its result is added into the input rows it covers."""
    layout = geometry.layout(v.shape[2])
    groups = _groups_by_tile(draw, v.shape[0], v.device)
    s0, b = geometry.stride[0], layout.height
    vs = _slabs(v, groups, lambda t: t * b, b)
    if draw.scale != 1.0:
        vs = vs * draw.scale
    rows = geometry.slab_rows(layout)
    padding, explicit = _rest_padding(geometry)
    rest = list(input_shape[3:])
    if explicit is not None:
        rest = [size + lo + hi for size, lo, hi in zip(rest, geometry.left[1:], geometry.right[1:])]
    slab_shape = (vs.shape[0], input_shape[1], rows, *rest)
    slabs = exact_input_vjp(slab_shape, weight, vs, geometry.stride, padding, geometry.dilation, geometry.groups)
    if explicit is not None:
        for dim, (lo, size) in enumerate(zip(geometry.left[1:], input_shape[3:])):
            slabs = slabs.narrow(3 + dim, lo, size)
    size = input_shape[2]
    result = slabs.new_zeros(input_shape)
    functional = torch._C._are_functorch_transforms_active()  # (vmap, grad: no in-place adds)
    offset = 0
    for tile, samples in groups:
        start = s0 * tile * b - geometry.left[0]
        low, high = max(start, 0), min(start + rows, size)
        piece = slabs[offset : offset + len(samples)].narrow(2, low - start, high - low)
        offset += len(samples)
        if functional:
            piece = F.pad(piece, [0, 0] * (len(input_shape) - 3) + [low, size - high])
            result = result.index_add(0, samples, piece)
        else:
            result.narrow(2, low, high - low).index_add_(0, samples, piece)
    return result


__all__ = [
    "HALO_FRACTION",
    "MAX_TILES",
    "TileLayout",
    "TilePlan",
    "draw_units",
    "exact_input_vjp",
    "exact_weight_vjp",
    "tile_input_vjp",
    "tile_layout",
    "tile_plan",
    "tile_weight_vjp",
    "units",
]
