"""Tile estimators: spatial sampling whose cost falls with ``keep`` on PyTorch's own kernels.

The output rows of every sample (first spatial dimension, ``O_1`` of them) are cut into
``T`` balanced tiles (:func:`tile_layout`: tile ``t`` is rows ``[⌊t·O_1/T⌋, ⌊(t+1)·O_1/T⌋)``,
so no tile hangs over the end). A *unit* is one (sample, tile) pair, ``U = N·T`` of them,
and the VJP is the sum of the units' contributions: ``G = Σ_u G_u``. The estimator keeps a
random subset of the units (``mode="bernoulli"``: each with probability ``p``, scale
``1/p``; ``mode="fixed"``: ``m = ceil(p·U)`` of them without replacement, scale ``U/m``),
so it is unbiased, with variance (entrywise)

- bernoulli: ``Var = (1 − p)/p · Σ_u G_u²``;
- fixed: ``Var = U²(1 − m/U)/m · S²``, ``S² = Σ_u (G_u − G/U)²/(U − 1)``.

A kept unit needs only its *slab* of the input: the tile's ``s·(B − 1) + 1`` rows and a
halo of ``d·(K − 1)``. Per tile, the slabs of its kept samples are one strided view of
``x`` (rows narrowed) from which the kept samples are selected — a view when they are a
contiguous run (every sample kept, or one tile per sample and a run drawn), one
``index_select`` copy of ``p`` of the tile otherwise — and go through *one* call of
PyTorch's weight-VJP kernel (``aten.convolution_backward``); only slabs whose padding is
asymmetric (the first and last tiles of a padded dimension when ``T > 1``) are zero-padded.
So the kernel's multiply-adds are exactly ``p`` times the exact VJP's (the halo adds reads,
not multiply-adds) and no im2col buffer is built. The input VJP (:func:`tile_input_vjp`)
is the same in reverse: the kept slabs of ``v`` go through PyTorch's input-VJP kernel and
their results are added into the rows they cover.

``T`` is set by a cost model (:func:`tile_layout`): tiles cost halo reads, zero-padded
copies at the borders and kernel calls, and buy finer units; so there are just enough tiles
for a fixed-size draw to keep about ``keep`` of the units (``T = 1``, the units being the
samples, whenever ``ceil(keep·N)/N ≤ 1.125·keep``), at most ``MAX_TILES``, each at least
``ceil(d·(K − 1)/(HALO_FRACTION·s))`` rows high and with ``MIN_CALL_FLOPS`` of work.

>>> tile_layout(32, 3, 1, 1, batch=3, keep=0.5), tile_layout(32, 3, 1, 1, batch=32, keep=0.5)
(TileLayout(rows=32, tiles=2), TileLayout(rows=32, tiles=1))
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..execute.dispatch import contract
from ..symbolic.builders.vjp import conv_input_vjp_network, conv_weight_vjp_network
from .sampling import Draw, fixed_count, sample

#: At most this many tiles per sample (more units lower the variance, but cost kernel calls).
MAX_TILES = 4
#: A slab's halo ``d·(K − 1)`` is at most this fraction of its tile's ``s·B`` own rows.
HALO_FRACTION = 0.25
#: Tiles are added (up to :data:`MAX_TILES`) until a fixed-size draw keeps at most
#: ``(1 + KEEP_DRIFT)·keep`` of the units.
KEEP_DRIFT = 0.125
#: ... but each kernel call keeps at least this many expected FLOPs (``2·multiply-adds``).
MIN_CALL_FLOPS = 2**24


@dataclass(frozen=True)
class TileLayout:
    """``rows`` output rows cut into ``tiles`` balanced tiles (heights differ by at most one)."""

    rows: int
    tiles: int

    def bounds(self, tile: int) -> tuple[int, int]:
        """Output rows ``[start, stop)`` of ``tile``.

        >>> [TileLayout(10, 4).bounds(t) for t in range(4)]
        [(0, 2), (2, 5), (5, 7), (7, 10)]
        """
        return tile * self.rows // self.tiles, (tile + 1) * self.rows // self.tiles

    @property
    def height(self) -> int:
        """The tallest tile's rows, ``ceil(rows/tiles)``."""
        return -(-self.rows // self.tiles)

    def row_tiles(self) -> tuple[int, ...]:
        """The tile of every output row.

        >>> TileLayout(5, 2).row_tiles()
        (0, 0, 1, 1, 1)
        """
        return tuple(t for t in range(self.tiles) for _ in range(*self.bounds(t)))


def tile_layout(
    rows: int, kernel: int, stride: int, dilation: int, *, batch: int, keep: float, flops: float = math.inf
) -> TileLayout:
    """The tiles of ``rows`` output rows of a dimension with this kernel, stride, dilation, for
    a draw of ``keep`` of ``batch`` samples' tiles of a VJP of ``flops`` FLOPs: the cost model.

    More tiles make more, smaller units, but each tile costs its halo (``halo = dilation·(kernel − 1)``
    more input rows read), a zero-padded copy when it touches the padding on one side, and a
    kernel call; for contributions that are not correlated across positions the variance is
    the same for any ``T``. So ``T`` is the smallest number of tiles for which a fixed-size
    draw keeps at most ``(1 + KEEP_DRIFT)·keep`` of the units (``ceil(keep·U)/U`` with
    ``U = batch·T``: the work is that fraction of the exact VJP's; with too few units it
    drifts above ``keep``, and a single sample could not be sampled at all), limited by
    ``MAX_TILES``, by a minimum tile height ``max(1, ceil(halo/(HALO_FRACTION·stride)))`` (the
    halo is at most ``HALO_FRACTION`` of a tile's own input rows; a 1×1 kernel has none),
    and by :data:`MIN_CALL_FLOPS` expected FLOPs per kernel call (``keep·flops/T``: a call's
    fixed cost, some 50–100 µs on a CPU, must stay small against its work).

    >>> tile_layout(32, 3, 1, 1, batch=64, keep=0.5), tile_layout(32, 3, 1, 1, batch=1, keep=0.5)
    (TileLayout(rows=32, tiles=1), TileLayout(rows=32, tiles=2))
    >>> tile_layout(32, 3, 1, 1, batch=10, keep=0.25), tile_layout(14, 3, 1, 1, batch=1, keep=0.25)
    (TileLayout(rows=32, tiles=2), TileLayout(rows=14, tiles=1))
    >>> tile_layout(32, 3, 1, 1, batch=1, keep=0.1, flops=20 * MIN_CALL_FLOPS)
    TileLayout(rows=32, tiles=2)
    """
    halo = dilation * (kernel - 1)
    min_height = max(1, math.ceil(halo / (HALO_FRACTION * stride)))
    calls = keep * flops / MIN_CALL_FLOPS if MIN_CALL_FLOPS > 0 else math.inf
    most = max(1, min(MAX_TILES, rows // min_height, int(calls) if calls < MAX_TILES else MAX_TILES))
    for count in range(1, most):
        units = batch * count
        if fixed_count(units, keep) <= (1 + KEEP_DRIFT) * keep * units + 1e-9:
            return TileLayout(rows, count)
    return TileLayout(rows, most)


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

    def layout(self, v_shape: tuple[int, ...], weight_shape: tuple[int, ...], keep: float) -> TileLayout:
        """The tiles for a VJP with vector ``v`` of ``v_shape`` and weight of ``weight_shape``."""
        flops = 2 * math.prod(v_shape[:1] + tuple(v_shape[2:])) * math.prod(weight_shape)
        return tile_layout(
            v_shape[2], self.kernel[0], self.stride[0], self.dilation[0], batch=v_shape[0], keep=keep, flops=flops
        )

    def slab(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows ``[low, high)`` (unpadded coordinates, may reach into the padding) read by
        output rows ``[start, stop)`` of dimension 1."""
        s, d, k, left = self.stride[0], self.dilation[0], self.kernel[0], self.left[0]
        return s * start - left, s * (stop - 1) + d * (k - 1) + 1 - left


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
    """The expected work of a tile weight VJP (``mode="fixed"``, ``kept`` of the ``units``
    drawn uniformly): the kernel calls' multiply-adds (``2·C_out·C_in/G·∏K`` per output
    position of the kept tiles) and the elements of ``x`` and ``v`` they read (the kept
    slabs, halos included)."""

    kept: int
    units: int
    flops: float
    gathered: float


def tile_plan(
    input_shape: tuple[int, ...], v_shape: tuple[int, ...], weight_shape: tuple[int, ...], geometry: _Geometry,
    keep: float,
) -> TilePlan:
    """:class:`TilePlan` of :func:`tile_weight_vjp` at ``keep`` (fixed mode: ``ceil(keep·U)``
    of the ``U = N·T`` units, each equally likely to be kept, so the plan is ``kept/U`` of
    the plan with every unit kept, whose FLOPs are the exact VJP's).

    >>> g = _Geometry((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    >>> full = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 1.0)
    >>> half = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 0.5)
    >>> half.units, half.kept, half.flops == 2 * 4 * 32 * 32 * 16 * 8 * 9 / 2
    (4, 2, True)
    """
    batch, rest_in, rest_out = v_shape[0], math.prod(input_shape[3:]), math.prod(v_shape[3:])
    layout = geometry.layout(v_shape, weight_shape, keep)
    flops = 2 * batch * v_shape[2] * rest_out * math.prod(weight_shape)
    read = 0
    for tile in range(layout.tiles):
        start, stop = layout.bounds(tile)
        low, high = geometry.slab(start, stop)
        rows = min(high, input_shape[2]) - max(low, 0)
        read += batch * (input_shape[1] * rows * rest_in + v_shape[1] * (stop - start) * rest_out)
    count = units(batch, layout)
    kept = fixed_count(count, keep)
    return TilePlan(kept, count, flops * kept / count, read * kept / count)


def _per_tile(draw: Draw, batch: int, tiles: int) -> list[tuple[int, list[int]]]:
    """The kept units as ``(tile, samples)`` pairs (``samples`` ascending; units are tile-major)."""
    indices, result = draw.indices, []
    for tile in range(tiles):
        low = bisect.bisect_left(indices, tile * batch)
        high = bisect.bisect_left(indices, (tile + 1) * batch, low)
        if high > low:
            result.append((tile, [index - tile * batch for index in indices[low:high]]))
    return result


#: Kept samples that form at most this many contiguous runs go through one kernel call per
#: run on views (no copy); more runs are gathered by one copy for one call.
MAX_RUNS = 2
#: A kernel call's slabs (of ``x`` and ``v``) are about this many bytes at most: the call's
#: transient buffers (the gathered copy, oneDNN's reorders of both operands) then stay small
#: enough for the allocator to reuse them instead of mapping fresh pages (page faults cost
#: about as much as a memory-bound layer's compute; docs/randomized.md, "Calls").
CALL_BYTES = 2**20
#: ... unless the weight is large: a call carries at least this many times the weight's
#: bytes, since every extra call adds one weight-sized partial result.
WEIGHT_CALLS = 4


def _groups(samples: list[int]) -> list[list[int]]:
    """``samples`` as its contiguous runs when there are at most :data:`MAX_RUNS`, else whole.

    >>> _groups([0, 1, 5, 6, 7]), _groups([0, 2, 4])
    ([[0, 1], [5, 6, 7]], [[0, 2, 4]])
    """
    runs = [[samples[0]]]
    for sample_ in samples[1:]:
        if sample_ == runs[-1][-1] + 1:
            runs[-1].append(sample_)
        else:
            runs.append([sample_])
            if len(runs) > MAX_RUNS:
                return [samples]
    return runs


def call_count(samples: int, sample_bytes: float, weight_bytes: float) -> int:
    """How many kernel calls ``samples`` samples of ``sample_bytes`` slab bytes each are cut
    into: ``round(total/max(CALL_BYTES, WEIGHT_CALLS·weight_bytes))``, at least 1, at most
    ``samples`` (a call that is a little over the budget is not split).

    >>> call_count(13, 6e5, 1e4), call_count(35, 3.1e4, 5e4), call_count(10, 8e5, 9e6)
    (7, 1, 1)
    """
    budget = max(CALL_BYTES, WEIGHT_CALLS * weight_bytes)
    return max(1, min(samples, round(samples * sample_bytes / budget)))


def _calls(samples: list[int], sample_bytes: float, weight_bytes: float) -> list[list[int]]:
    """The kept ``samples`` of one tile as kernel calls: :func:`_groups`, each cut into
    :func:`call_count` consecutive, balanced pieces (a piece of a contiguous run is a view).

    >>> _calls([0, 2, 4, 5, 6], 2**19, 0)
    [[0, 2], [4, 5, 6]]
    """
    result = []
    for group in _groups(samples):
        count = call_count(len(group), sample_bytes, weight_bytes)
        result += [group[i * len(group) // count : (i + 1) * len(group) // count] for i in range(count)]
    return result


def _slab_bytes(x_shape: tuple[int, ...], v_shape: tuple[int, ...], slab: _Slab, itemsize: int) -> int:
    """Bytes of one sample's slabs of ``x`` and ``v`` for ``slab``."""
    rows_in, rows_out = slab.above + slab.high - slab.low + slab.below, slab.stop - slab.start
    return itemsize * (x_shape[1] * rows_in * math.prod(x_shape[3:]) + v_shape[1] * rows_out * math.prod(v_shape[3:]))


def _select(tensor: torch.Tensor, samples: list[int]) -> torch.Tensor:
    """``tensor[samples]`` along the batch: a view for a contiguous run, else one copy."""
    first, count = samples[0], len(samples)
    if samples[-1] - first + 1 == count:
        return tensor if count == tensor.shape[0] else tensor.narrow(0, first, count)
    return tensor.index_select(0, torch.tensor(samples, device=tensor.device))


def _rest_padding(geometry: _Geometry) -> tuple[list[int], list[int] | None]:
    """Torch's symmetric padding for the untiled dimensions, and the explicit ``F.pad``
    amounts (the tiled dimension's last) when some untiled dimension is padded asymmetrically."""
    left, right = geometry.left[1:], geometry.right[1:]
    if left == right:
        return list(left), None
    explicit: list[int] = []
    for lo, hi in zip(reversed(left), reversed(right)):
        explicit += [lo, hi]
    return [0] * (geometry.dims - 1), explicit


@dataclass(frozen=True)
class _Slab:
    """How one tile's slab is read: input rows ``[low, high)`` of ``x`` (inside it) and the
    padding above/below; ``symmetric`` when the kernel's own padding can supply it."""

    start: int
    stop: int
    low: int
    high: int
    above: int
    below: int

    @property
    def symmetric(self) -> bool:
        return self.above == self.below


def _slabs(geometry: _Geometry, layout: TileLayout, in_rows: int) -> list[_Slab | None]:
    """Every tile's slab (``None`` for a tile whose windows lie in the padding: it adds nothing)."""
    result: list[_Slab | None] = []
    for tile in range(layout.tiles):
        start, stop = layout.bounds(tile)
        low, high = geometry.slab(start, stop)
        if high <= 0 or low >= in_rows:
            result.append(None)
            continue
        inner_low, inner_high = max(low, 0), min(high, in_rows)
        below = high - inner_high
        if tile == layout.tiles - 1 and layout.tiles == 1:
            # the whole dimension: rows past the last window are never read; torch's kernel
            # takes the whole input and its own (symmetric) padding
            inner_high, below = in_rows, geometry.right[0]
        result.append(_Slab(start, stop, inner_low, inner_high, inner_low - low, below))
    return result


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
    network = conv_weight_vjp_network(
        tuple(x.shape), tuple(weight_shape), tuple(stride), tuple(padding), tuple(dilation), groups
    )
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
    network = conv_input_vjp_network(
        tuple(input_shape), tuple(weight.shape), tuple(stride), tuple(padding), tuple(dilation), groups
    )
    return contract(network, {"w": weight, "v": v})


def tile_weight_vjp(
    x: torch.Tensor, v: torch.Tensor, weight_shape: tuple[int, ...], geometry: _Geometry, layout: TileLayout,
    draw: Draw,
) -> torch.Tensor:
    """The weight VJP over the drawn units, rescaled: ``s · Σ_{u kept} G_u``.

    One kernel call per tile with kept units, on the kept samples' slabs (a view of ``x``
    and ``v`` narrowed to the tile's rows, the kept samples selected); the VJP is additive
    over units.
    """
    rest, explicit = _rest_padding(geometry)
    slabs = _slabs(geometry, layout, x.shape[2])
    weight_bytes = math.prod(weight_shape) * x.element_size()
    result = None
    for tile, samples in _per_tile(draw, x.shape[0], layout.tiles):
        slab = slabs[tile]
        if slab is None:
            continue
        sample_bytes = _slab_bytes(tuple(x.shape), tuple(v.shape), slab, x.element_size())
        for group in _calls(samples, sample_bytes, weight_bytes):
            xs = _select(x.narrow(2, slab.low, slab.high - slab.low), group)
            vs = _select(v.narrow(2, slab.start, slab.stop - slab.start), group)
            pad = [slab.above if slab.symmetric else 0, *rest]
            if explicit is not None or not slab.symmetric:
                rows = [0, 0] if slab.symmetric else [slab.above, slab.below]
                xs = F.pad(xs, (explicit or [0, 0] * (geometry.dims - 1)) + rows)
            part = exact_weight_vjp(xs, vs, weight_shape, geometry.stride, pad, geometry.dilation, geometry.groups)
            result = part if result is None else result + part
    if result is None:
        return x.new_zeros(weight_shape)
    return result * draw.scale if draw.scale != 1.0 else result


def tile_input_vjp(
    weight: torch.Tensor, v: torch.Tensor, input_shape: tuple[int, ...], geometry: _Geometry, layout: TileLayout,
    draw: Draw,
) -> torch.Tensor:
    """The input VJP over the drawn units, rescaled: every kept slab of ``v`` goes through
    the input-VJP kernel, and its result is added into the input rows it covers."""
    rest, explicit = _rest_padding(geometry)
    sizes = list(input_shape[3:])
    if explicit is not None:
        sizes = [size + lo + hi for size, lo, hi in zip(sizes, geometry.left[1:], geometry.right[1:])]
    functional = torch._C._are_functorch_transforms_active()  # (vmap, grad: no in-place adds)
    result = v.new_zeros(input_shape)
    slabs = _slabs(geometry, layout, input_shape[2])
    weight_bytes = weight.numel() * weight.element_size()
    for tile, group in _per_tile(draw, v.shape[0], layout.tiles):
        slab = slabs[tile]
        if slab is None:
            continue
        sample_bytes = _slab_bytes(tuple(input_shape), tuple(v.shape), slab, v.element_size())
        for samples in _calls(group, sample_bytes, weight_bytes):
            result = _input_slab(weight, v, input_shape, geometry, slab, samples, draw.scale, sizes, rest, explicit,
                                 result, functional)
    return result


def _input_slab(  # type: ignore[no-untyped-def]
    weight, v, input_shape, geometry, slab, samples, scale, sizes, rest, explicit, result, functional
) -> torch.Tensor:
    """One kernel call of :func:`tile_input_vjp`: the ``samples``' slab of ``v``, added into ``result``."""
    vs = _select(v.narrow(2, slab.start, slab.stop - slab.start), samples)
    if scale != 1.0:
        vs = vs * scale
    inner = slab.high - slab.low
    if slab.symmetric:
        shape, pad = (len(samples), input_shape[1], inner, *sizes), [slab.above, *rest]
    else:
        shape, pad = (len(samples), input_shape[1], slab.above + inner + slab.below, *sizes), [0, *rest]
    part = exact_input_vjp(shape, weight, vs, geometry.stride, pad, geometry.dilation, geometry.groups)
    if not slab.symmetric:
        part = part.narrow(2, slab.above, inner)
    if explicit is not None:
        for dim, (lo, size) in enumerate(zip(geometry.left[1:], input_shape[3:])):
            part = part.narrow(3 + dim, lo, size)
    return _add_rows(result, part, samples, slab.low, functional)


def _add_rows(result: torch.Tensor, part: torch.Tensor, samples: list[int], low: int, functional: bool) -> torch.Tensor:
    """``result[samples, :, low : low + rows] += part``."""
    rows, size = part.shape[2], result.shape[2]
    contiguous = samples[-1] - samples[0] + 1 == len(samples)
    if functional:
        part = F.pad(part, [0, 0] * (result.dim() - 3) + [low, size - low - rows])
        if contiguous and len(samples) == result.shape[0]:
            return result + part
        return result.index_add(0, torch.tensor(samples, device=result.device), part)
    target = result.narrow(2, low, rows)
    if contiguous:
        target.narrow(0, samples[0], len(samples)).add_(part)
    else:
        target.index_add_(0, torch.tensor(samples, device=result.device), part)
    return result


__all__ = [
    "CALL_BYTES",
    "HALO_FRACTION",
    "MAX_RUNS",
    "MAX_TILES",
    "MIN_CALL_FLOPS",
    "KEEP_DRIFT",
    "TileLayout",
    "TilePlan",
    "WEIGHT_CALLS",
    "call_count",
    "draw_units",
    "exact_input_vjp",
    "exact_weight_vjp",
    "tile_input_vjp",
    "tile_layout",
    "tile_plan",
    "tile_weight_vjp",
    "units",
]
