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
PyTorch's weight-VJP kernel (``aten.convolution_backward``; for a small 1-d call one GEMM
where :mod:`tnconv.execute.small_vjp` estimates that faster); only slabs whose padding is
asymmetric (the first and last tiles of a padded dimension when ``T > 1``) are zero-padded.
So the kernel's multiply-adds are exactly ``p`` times the exact VJP's (the halo adds reads,
not multiply-adds) and no im2col buffer is built (but the small one, at most
``small_vjp.MAX_BUFFER_BYTES``, of a 1-d call that runs as a GEMM). The input VJP (:func:`tile_input_vjp`)
is the same in reverse: the kept slabs of ``v`` go through PyTorch's input-VJP kernel and
their results are added into the rows they cover.

``T`` is set by a cost model (:func:`tile_layout`): a draw's time is estimated from its
kernel calls (a fixed cost each), its multiply-adds and the bytes of ``x`` and ``v`` it
streams (halos included), and ``T`` is the number of tiles with the lowest estimate: tiles
buy finer units, so that a fixed-size draw keeps about ``keep`` of the units (with ``N = 1``
and ``T = 1`` it would keep everything), and cost halo reads and calls. A Bernoulli draw
keeps ``keep`` of the units in expectation for any ``T``: the model then gives it one tile
per sample (tiles would only add halos and calls). At most
``MAX_TILES``, each at least ``ceil(d·(K − 1)/(HALO_FRACTION·s))`` rows high.

>>> tile_layout(32, 3, 1, 1, batch=3, keep=0.5), tile_layout(32, 3, 1, 1, batch=32, keep=0.5)
(TileLayout(rows=32, tiles=2), TileLayout(rows=32, tiles=1))
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..caching import cached
from ..execute import small_vjp
from ..execute.dispatch import contract
from ..symbolic.builders.vjp import conv_input_vjp_network, conv_weight_vjp_network
from .sampling import Draw, check_mode, fixed_count, sample

#: At most this many tiles per sample (more units lower the variance, but cost kernel calls).
MAX_TILES = 4
#: A slab's halo ``d·(K − 1)`` is at most this fraction of its tile's ``s·B`` own rows.
HALO_FRACTION = 0.25
#: The cost model's machine (one CPU core, float32, PyTorch's oneDNN kernels; measured on
#: the bundled layers' exact weight VJPs): a kernel call's fixed cost (the call, oneDNN's
#: primitive lookup, our per-call Python) ...
CALL_SECONDS = 75e-6
#: ... the multiply-add rate of compute-bound layers (35–55 GFLOP/s measured) ...
FLOP_RATE = 4e10
#: ... and the rate at which memory-bound layers (depthwise, 1×1 with few output channels)
#: stream their operands ``x`` and ``v`` (2–8 GB/s measured, oneDNN's reorders included).
BYTE_RATE = 4e9
#: More tiles are taken only when they beat fewer by more than this fraction of the estimate:
#: what the model leaves out (the zero-padded copy of a bottom slab, oneDNN's slower path for
#: row-narrowed views, colder caches) costs tiles more than one tile per sample. Measured
#: on the bundled file: 2 tiles that cut the kept work by 4–7 % (``ceil(keep·N)/N`` =
#: 0.51–0.54 → 0.5) cost 1.2–1.3× the exact VJP at keep 0.5, against ≈ 0.6 with one.
TILE_MARGIN = 0.1


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


def kept_fraction(units: int, keep: float, mode: str = "fixed") -> float:
    """The fraction ``ceil(keep·U)/U`` of ``U`` units that a fixed-size draw keeps; a Bernoulli
    draw keeps ``keep`` of them in expectation, however many units there are."""
    return keep if mode == "bernoulli" else fixed_count(units, keep) / units


def expected_calls(batch: int, tiles: int, keep: float, mode: str = "fixed") -> float:
    """The expected number of tiles with a kept unit (one kernel call each) when a fixed-size
    draw keeps ``m = ceil(keep·U)`` of the ``U = batch·tiles`` units: ``T·(1 − P[empty])``,
    ``P[empty] = Π_{i<N} (U − m − i)/(U − i)`` (none of the tile's ``N`` units drawn); for
    a Bernoulli draw ``P[empty] = (1 − keep)^N``.

    >>> expected_calls(1, 4, 0.25), expected_calls(2, 2, 0.5), expected_calls(1, 2, 0.5, "bernoulli")
    (1.0, 1.6666666666666667, 1.0)
    """
    if mode == "bernoulli":
        return tiles * (1.0 - (1.0 - keep) ** batch)
    count = batch * tiles
    kept = fixed_count(count, keep)
    empty = 1.0
    for i in range(batch):
        empty *= max(0, count - kept - i) / (count - i)
    return tiles * (1.0 - empty)


def layout_seconds(
    rows: int,
    tiles: int,
    halo: int,
    stride: int,
    *,
    batch: int,
    keep: float,
    flops: float,
    x_bytes: float,
    v_bytes: float,
    mode: str = "fixed",
) -> float:
    """The cost model's estimate of a draw's (expected) time with ``tiles`` tiles (seconds):
    ``E[calls]·CALL_SECONDS + kept·(flops/FLOP_RATE + bytes/BYTE_RATE)``, where ``kept`` is
    :func:`kept_fraction`, ``E[calls]`` :func:`expected_calls` and ``bytes`` the slabs of
    ``x`` (its ``x_bytes`` grown by the halos: ``s·O + T·halo`` input rows read instead of
    ``s·O + halo``) and ``v`` (``v_bytes``). A call's time is thus estimated from its
    multiply-adds *and* the bytes it streams (a roofline sum): a depthwise or a 1×1 layer
    with few output channels is byte-bound, and its few FLOPs alone would make it look too
    small to be worth cutting into tiles. ``mode="bernoulli"``: the kept fraction and the calls
    of a Bernoulli draw, whose expected kept work is ``keep`` for any ``T`` — so more tiles
    only add halos and calls, and one tile per sample is the cheapest.

    >>> round(1e3 * layout_seconds(56, 1, 2, 2, batch=1, keep=0.5, flops=5.4e6, x_bytes=4.8e6, v_bytes=1.2e6), 2)
    1.71
    >>> round(1e3 * layout_seconds(56, 2, 2, 2, batch=1, keep=0.5, flops=5.4e6, x_bytes=4.8e6, v_bytes=1.2e6), 2)
    0.9
    """
    check_mode(mode)
    own = stride * rows + halo
    streamed = x_bytes * (stride * rows + tiles * halo) / own + v_bytes
    work = flops / FLOP_RATE + streamed / BYTE_RATE
    calls = expected_calls(batch, tiles, keep, mode)
    return calls * CALL_SECONDS + kept_fraction(batch * tiles, keep, mode) * work


def tile_layout(
    rows: int,
    kernel: int,
    stride: int,
    dilation: int,
    *,
    batch: int,
    keep: float,
    flops: float = math.inf,
    x_bytes: float = 0.0,
    v_bytes: float = 0.0,
    mode: str = "fixed",
) -> TileLayout:
    """The tiles of ``rows`` output rows of a dimension with this kernel, stride, dilation, for
    a fixed-size draw of ``keep`` of ``batch`` samples' tiles of a VJP of ``flops`` FLOPs that
    reads ``x_bytes`` of ``x`` and ``v_bytes`` of ``v``: the cost model.

    More tiles make more, smaller units: a fixed-size draw then keeps a fraction
    ``ceil(keep·N·T)/(N·T)`` closer to ``keep`` (with one sample and one tile it keeps
    everything), but every tile costs its halo (``halo = dilation·(kernel − 1)`` more input
    rows read) and a kernel call (:data:`CALL_SECONDS`) whenever one of its units is kept.
    For contributions that are not correlated across positions the variance is the same for
    any ``T``, so ``T`` is the fewest tiles whose estimated time (:func:`layout_seconds`) is
    within :data:`TILE_MARGIN` of the lowest, from 1 to ``MAX_TILES`` and at most ``rows`` over a
    minimum tile height ``max(1, ceil(halo/(HALO_FRACTION·stride)))`` (the halo is at most
    ``HALO_FRACTION`` of a tile's own input rows; a 1×1 kernel has none). Without ``flops``
    (infinite work) ``T`` is the smallest with the lowest kept fraction.

    >>> tile_layout(32, 3, 1, 1, batch=64, keep=0.5), tile_layout(32, 3, 1, 1, batch=1, keep=0.5)
    (TileLayout(rows=32, tiles=1), TileLayout(rows=32, tiles=2))
    >>> tile_layout(32, 3, 1, 1, batch=10, keep=0.25), tile_layout(14, 3, 1, 1, batch=1, keep=0.25)
    (TileLayout(rows=32, tiles=2), TileLayout(rows=14, tiles=1))

    A small compute-bound layer keeps one tile per sample (the calls would cost more than the
    work they save); the depthwise ``mobilenet_v2/features.2.conv.1.0`` at ``N = 1``
    (5.4 MFLOPs, but 6 MB of ``x`` and ``v``) gets its tiles:

    >>> tile_layout(122, 3, 1, 1, batch=10, keep=0.25, flops=4.8e7, x_bytes=1e5, v_bytes=1e5).tiles
    1
    >>> [tile_layout(56, 3, 2, 1, batch=1, keep=keep, flops=5.4e6, x_bytes=4.8e6, v_bytes=1.2e6).tiles
    ...  for keep in (0.5, 0.25, 0.1)]
    [2, 4, 4]

    A Bernoulli draw (``mode="bernoulli"``) keeps ``keep`` of the work in expectation with any
    number of tiles, so tiles would only cost halos and calls:

    >>> tile_layout(56, 3, 2, 1, batch=1, keep=0.5, flops=5.4e6, x_bytes=4.8e6, v_bytes=1.2e6, mode="bernoulli").tiles
    1
    """
    check_mode(mode)
    halo = dilation * (kernel - 1)
    min_height = max(1, math.ceil(halo / (HALO_FRACTION * stride)))
    most = max(1, min(MAX_TILES, rows // min_height))
    if math.isinf(flops):
        return TileLayout(rows, min(range(1, most + 1), key=lambda t: (kept_fraction(batch * t, keep, mode), t)))

    def seconds(tiles: int) -> float:
        return layout_seconds(
            rows,
            tiles,
            halo,
            stride,
            batch=batch,
            keep=keep,
            flops=flops,
            x_bytes=x_bytes,
            v_bytes=v_bytes,
            mode=mode,
        )

    estimates = [seconds(t) for t in range(1, most + 1)]
    best = min(estimates)
    return TileLayout(rows, next(t for t, e in enumerate(estimates, 1) if e <= (1 + TILE_MARGIN) * best))


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

    def layout(
        self,
        x_shape: tuple[int, ...],
        v_shape: tuple[int, ...],
        weight_shape: tuple[int, ...],
        keep: float,
        itemsize: int = 4,
        mode: str = "fixed",
    ) -> TileLayout:
        """The tiles for a VJP of input ``x_shape``, vector ``v`` of ``v_shape``, weight of
        ``weight_shape``, elements of ``itemsize`` bytes, draws of ``mode`` (:func:`tile_layout`; cached)."""
        return _layout(self, tuple(x_shape), tuple(v_shape), tuple(weight_shape), keep, itemsize, mode)

    def outputs(self, rows: int, padding: int) -> int:
        """Output rows of dimension 1 for ``rows`` input rows padded by ``padding`` on both sides."""
        return (rows + 2 * padding - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1

    def slab(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows ``[low, high)`` (unpadded coordinates, may reach into the padding) read by
        output rows ``[start, stop)`` of dimension 1."""
        s, d, k, left = self.stride[0], self.dilation[0], self.kernel[0], self.left[0]
        return s * start - left, s * (stop - 1) + d * (k - 1) + 1 - left


@cached(maxsize=1024, bypassable=False)
def _layout(
    geometry: _Geometry,
    x_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    keep: float,
    itemsize: int,
    mode: str = "fixed",
) -> TileLayout:
    flops = 2 * math.prod(v_shape[:1] + tuple(v_shape[2:])) * math.prod(weight_shape)
    return tile_layout(
        v_shape[2],
        geometry.kernel[0],
        geometry.stride[0],
        geometry.dilation[0],
        batch=v_shape[0],
        keep=keep,
        flops=flops,
        x_bytes=itemsize * math.prod(x_shape),
        v_bytes=itemsize * math.prod(v_shape),
        mode=mode,
    )


def units(batch: int, layout: TileLayout) -> int:
    """The number of units, ``N·T`` (unit ``u = t·N + n``: tile-major)."""
    return batch * layout.tiles


def draw_units(
    batch: int, layout: TileLayout, keep: float, mode: str, generator: torch.Generator | None
) -> Draw | None:
    """A draw over the ``N·T`` units (``None`` when nothing is kept; ``generator`` already checked)."""
    return sample(units(batch, layout), keep, mode, generator, checked=True)


@dataclass(frozen=True)
class TilePlan:
    """The expected work of a tile weight VJP (``kept``: how many of the ``units`` a fixed-size
    draw keeps, uniformly): the kernel calls' multiply-adds (``2·C_out·C_in/G·∏K`` per output
    position of the kept tiles) and the elements of ``x`` and ``v`` they read (the kept
    slabs, halos included) — for a Bernoulli draw, ``keep`` of them in expectation."""

    kept: int
    units: int
    flops: float
    gathered: float


def tile_plan(
    input_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    geometry: _Geometry,
    keep: float,
    itemsize: int = 4,
    mode: str = "fixed",
) -> TilePlan:
    """:class:`TilePlan` of :func:`tile_weight_vjp` at ``keep`` (fixed mode: ``ceil(keep·U)``
    of the ``U = N·T`` units, each equally likely to be kept, so the plan is ``kept/U`` of
    the plan with every unit kept, whose FLOPs are the exact VJP's; elements of ``itemsize``
    bytes, which the cost model's layout depends on).

    >>> g = _Geometry((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    >>> full = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 1.0)
    >>> half = tile_plan((4, 8, 32, 32), (4, 16, 32, 32), (16, 8, 3, 3), g, 0.5)
    >>> half.units, half.kept, half.flops == 2 * 4 * 32 * 32 * 16 * 8 * 9 / 2
    (4, 2, True)
    """
    batch, rest_in, rest_out = v_shape[0], math.prod(input_shape[3:]), math.prod(v_shape[3:])
    layout = geometry.layout(input_shape, v_shape, weight_shape, keep, itemsize, mode)
    flops = 2 * batch * v_shape[2] * rest_out * math.prod(weight_shape)
    read = 0
    for tile in range(layout.tiles):
        start, stop = layout.bounds(tile)
        low, high = geometry.slab(start, stop)
        rows = min(high, input_shape[2]) - max(low, 0)
        read += batch * (input_shape[1] * rows * rest_in + v_shape[1] * (stop - start) * rest_out)
    count = units(batch, layout)
    kept = fixed_count(count, keep)
    fraction = kept_fraction(count, keep, mode)  # Bernoulli: keep, in expectation
    return TilePlan(kept, count, flops * fraction, read * fraction)


def _kept_ranges(indices: tuple[int, ...], batch: int, tiles: int) -> list[tuple[int, int, int]]:
    """The kept units per tile as ``(tile, low, high)``: ``indices[low:high]`` (sorted, units
    tile-major, ``u = t·N + n``) are tile ``t``'s, samples ``u − t·N``.

    >>> _kept_ranges((0, 2, 3, 7), 4, 2)
    [(0, 0, 3), (1, 3, 4)]
    """
    if tiles == 1:
        return [(0, 0, len(indices))] if indices else []
    result, low = [], 0
    for tile in range(tiles):
        high = bisect.bisect_left(indices, (tile + 1) * batch, low)
        if high > low:
            result.append((tile, low, high))
        low = high
    return result


def _per_tile(draw: Draw, batch: int, tiles: int) -> list[tuple[int, list[int]]]:
    """The kept units as ``(tile, samples)`` pairs (``samples`` ascending; units are tile-major)."""
    return [
        (tile, [index - tile * batch for index in draw.indices[low:high]])
        for tile, low, high in _kept_ranges(draw.indices, batch, tiles)
    ]


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


def _runs(samples: Sequence[int], low: int, high: int) -> list[tuple[int, int]]:
    """``samples[low:high]`` as the position ranges of its contiguous runs when there are at
    most :data:`MAX_RUNS`, else one range.

    >>> _runs([0, 1, 5, 6, 7], 0, 5), _runs([0, 2, 4], 0, 3)
    ([(0, 2), (2, 5)], [(0, 3)])
    """
    runs, begin = [], low
    for position in range(low + 1, high):
        if samples[position] != samples[position - 1] + 1:
            runs.append((begin, position))
            begin = position
            if len(runs) >= MAX_RUNS:
                return [(low, high)]
    runs.append((begin, high))
    return runs


def _groups(samples: list[int]) -> list[list[int]]:
    """``samples`` as its contiguous runs when there are at most :data:`MAX_RUNS`, else whole.

    >>> _groups([0, 1, 5, 6, 7]), _groups([0, 2, 4])
    ([[0, 1], [5, 6, 7]], [[0, 2, 4]])
    """
    return [samples[low:high] for low, high in _runs(samples, 0, len(samples))]


def call_count(samples: int, sample_bytes: float, weight_bytes: float) -> int:
    """How many kernel calls ``samples`` samples of ``sample_bytes`` slab bytes each are cut
    into: ``round(total/max(CALL_BYTES, WEIGHT_CALLS·weight_bytes))``, at least 1, at most
    ``samples`` (a call that is a little over the budget is not split).

    >>> call_count(13, 6e5, 1e4), call_count(35, 3.1e4, 5e4), call_count(10, 8e5, 9e6)
    (7, 1, 1)
    """
    budget = max(CALL_BYTES, WEIGHT_CALLS * weight_bytes)
    return max(1, min(samples, round(samples * sample_bytes / budget)))


def _call_ranges(
    samples: Sequence[int], low: int, high: int, sample_bytes: float, weight_bytes: float
) -> list[tuple[int, int]]:
    """The kept ``samples[low:high]`` of one tile as kernel calls (position ranges):
    :func:`_runs`, each cut into :func:`call_count` consecutive, balanced pieces (a piece of
    a contiguous run is a view)."""
    result = []
    for begin, end in _runs(samples, low, high):
        size = end - begin
        count = call_count(size, sample_bytes, weight_bytes)
        if count == 1:
            result.append((begin, end))
        else:
            result += [(begin + i * size // count, begin + (i + 1) * size // count) for i in range(count)]
    return result


def _calls(samples: list[int], sample_bytes: float, weight_bytes: float) -> list[list[int]]:
    """The kept ``samples`` of one tile as kernel calls (:func:`_call_ranges`).

    >>> _calls([0, 2, 4, 5, 6], 2**19, 0)
    [[0, 2], [4, 5, 6]]
    """
    return [samples[low:high] for low, high in _call_ranges(samples, 0, len(samples), sample_bytes, weight_bytes)]


def _slab_bytes(x_shape: tuple[int, ...], v_shape: tuple[int, ...], slab: _Slab, itemsize: int) -> int:
    """Bytes of one sample's slabs of ``x`` and ``v`` for ``slab``."""
    rows_in, rows_out = slab.above + slab.high - slab.low + slab.below, slab.stop - slab.start
    return itemsize * (x_shape[1] * rows_in * math.prod(x_shape[3:]) + v_shape[1] * rows_out * math.prod(v_shape[3:]))


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
        above = inner_low - low
        if below < above and geometry.outputs(inner_high - inner_low, above) == stop - start:
            # (a first tile at stride > padding: torch's symmetric padding supplies the rows
            # above, and its extra rows below are never read; no zero-padded copy)
            below = above
        result.append(_Slab(start, stop, inner_low, inner_high, above, below))
    return result


def _torch_kernel(dims: int, device: torch.device) -> bool:
    return dims <= 3


def exact_weight_vjp(
    x: torch.Tensor, v: torch.Tensor, weight_shape: tuple[int, ...], stride, padding, dilation, groups: int
) -> torch.Tensor:
    """The exact weight VJP (symmetric ``padding`` per dimension): PyTorch's kernel for
    ``D ≤ 3`` (or one GEMM where :mod:`tnconv.execute.small_vjp` estimates it faster), the
    tnconv network otherwise."""
    dims = x.dim() - 2
    if _torch_kernel(dims, x.device):
        return small_vjp.weight_vjp(v, x, weight_shape, stride, padding, dilation, groups)
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
        x = v.new_empty(input_shape)  # never read (a broadcast view would slow the kernel down)
        return torch.ops.aten.convolution_backward(
            v,
            x,
            weight,
            None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0] * dims,
            groups,
            (True, False, False),
        )[0]
    network = conv_input_vjp_network(
        tuple(input_shape), tuple(weight.shape), tuple(stride), tuple(padding), tuple(dilation), groups
    )
    return contract(network, {"w": weight, "v": v})


@dataclass(frozen=True)
class _TileCall:
    """How one tile's kept samples go through the kernel: the slab, the kernel's padding of
    the tiled dimension and the others (``pad``), the ``F.pad`` amounts of an explicitly
    padded slab (``None``: none) and the bytes of one sample's slabs."""

    slab: _Slab
    pad: tuple[int, ...]
    explicit: tuple[int, ...] | None
    sample_bytes: int

    def take(self, tensor: torch.Tensor, rows: bool) -> torch.Tensor:
        """``tensor`` narrowed to the slab's input rows (``rows``) or its output rows."""
        low, high = (self.slab.low, self.slab.high) if rows else (self.slab.start, self.slab.stop)
        return tensor if high - low == tensor.shape[2] else tensor.narrow(2, low, high - low)


@dataclass(frozen=True)
class _CallPlan:
    """Everything about a tile VJP's kernel calls that does not depend on the draw (cached
    per shapes, geometry and layout): the per-call Python is then the draw's part only."""

    tiles: tuple[_TileCall | None, ...]
    weight_bytes: int
    #: the input VJP's padded extents of the untiled dimensions (explicit padding included)
    sizes: tuple[int, ...]
    explicit: bool


@cached(maxsize=1024, bypassable=False)
def _call_plan(
    x_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    geometry: _Geometry,
    layout: TileLayout,
    itemsize: int,
) -> _CallPlan:
    rest, explicit = _rest_padding(geometry)
    calls: list[_TileCall | None] = []
    for slab in _slabs(geometry, layout, x_shape[2]):
        if slab is None:
            calls.append(None)
            continue
        pad = (slab.above if slab.symmetric else 0, *rest)
        amounts = None
        if explicit is not None or not slab.symmetric:
            rows = [0, 0] if slab.symmetric else [slab.above, slab.below]
            amounts = tuple((explicit or [0, 0] * (geometry.dims - 1)) + rows)
        calls.append(_TileCall(slab, pad, amounts, _slab_bytes(x_shape, v_shape, slab, itemsize)))
    sizes = tuple(x_shape[3:])
    if explicit is not None:
        sizes = tuple(size + lo + hi for size, lo, hi in zip(sizes, geometry.left[1:], geometry.right[1:]))
    return _CallPlan(tuple(calls), math.prod(weight_shape) * itemsize, sizes, explicit is not None)


def _pieces(
    draw: Draw, batch: int, layout: TileLayout, plan: _CallPlan, device: torch.device
) -> Iterator[tuple[_TileCall, int, int, torch.Tensor | None]]:
    """The kernel calls of a draw: ``(tile call, first sample, count, index)`` with ``index``
    ``None`` for a contiguous run of samples (a view) and the samples' index tensor otherwise
    (one per call, shared by ``x`` and ``v``; sliced from the draw's own index tensor)."""
    indices = draw.indices
    for tile, low, high in _kept_ranges(indices, batch, layout.tiles):
        call = plan.tiles[tile]
        if call is None:
            continue
        offset = tile * batch
        for begin, end in _call_ranges(indices, low, high, call.sample_bytes, plan.weight_bytes):
            first, count = indices[begin] - offset, end - begin
            if indices[end - 1] - indices[begin] + 1 == count:
                yield call, first, count, None
            else:
                index = draw.index(device)
                if begin or end != len(indices):
                    index = index[begin:end]
                yield call, first, count, (index - offset if offset else index)


def _take(tensor: torch.Tensor, first: int, count: int, index: torch.Tensor | None) -> torch.Tensor:
    """``tensor``'s samples ``first … first + count − 1`` (a view), or ``index`` (one copy)."""
    if index is not None:
        return tensor.index_select(0, index)
    return tensor if count == tensor.shape[0] else tensor.narrow(0, first, count)


@cached(maxsize=1024, bypassable=False)
def tile_setup(
    geometry: _Geometry,
    x_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    keep: float,
    itemsize: int,
    mode: str = "fixed",
) -> tuple[TileLayout, _CallPlan]:
    """The layout (:meth:`_Geometry.layout`) and the call plan of a tile VJP at ``keep`` for
    draws of ``mode``: one cache lookup per call of the estimators (``x_shape`` is the input's
    shape for either VJP)."""
    layout = geometry.layout(x_shape, v_shape, weight_shape, keep, itemsize, mode)
    return layout, _call_plan(x_shape, v_shape, weight_shape, geometry, layout, itemsize)


def tile_weight_vjp(
    x: torch.Tensor,
    v: torch.Tensor,
    weight_shape: tuple[int, ...],
    geometry: _Geometry,
    layout: TileLayout,
    draw: Draw,
    plan: _CallPlan | None = None,
) -> torch.Tensor:
    """The weight VJP over the drawn units, rescaled: ``s · Σ_{u kept} G_u``.

    Kernel calls per tile with kept units (:func:`_call_ranges`), on the kept samples' slabs
    (a view of ``x`` and ``v`` narrowed to the tile's rows, the kept samples selected); the
    VJP is additive over units. ``plan``: :func:`tile_setup`'s for this ``layout``.
    """
    if plan is None:
        plan = _call_plan(tuple(x.shape), tuple(v.shape), tuple(weight_shape), geometry, layout, x.element_size())
    result = None
    for call, first, count, index in _pieces(draw, x.shape[0], layout, plan, x.device):
        xs = _take(call.take(x, True), first, count, index)
        vs = _take(call.take(v, False), first, count, index)
        if call.explicit is not None:
            xs = F.pad(xs, call.explicit)
        # torch's kernel (or one GEMM for a small 1-d call, execute.small_vjp); tnconv's network for D > 3
        part = exact_weight_vjp(xs, vs, weight_shape, geometry.stride, call.pad, geometry.dilation, geometry.groups)
        result = part if result is None else result + part
    if result is None:
        return x.new_zeros(weight_shape)
    if draw.scale == 1.0:
        return result
    # the kernel's fresh result is scaled in place (out of place under torch.func transforms)
    return result * draw.scale if torch._C._are_functorch_transforms_active() else result.mul_(draw.scale)


def tile_input_vjp(
    weight: torch.Tensor,
    v: torch.Tensor,
    input_shape: tuple[int, ...],
    geometry: _Geometry,
    layout: TileLayout,
    draw: Draw,
    plan: _CallPlan | None = None,
) -> torch.Tensor:
    """The input VJP over the drawn units, rescaled: every kept slab of ``v`` goes through
    the input-VJP kernel, and its result is added into the input rows it covers."""
    input_shape = tuple(input_shape)
    if plan is None:
        plan = _call_plan(input_shape, tuple(v.shape), tuple(weight.shape), geometry, layout, v.element_size())
    functional = torch._C._are_functorch_transforms_active()  # (vmap, grad: no in-place adds)
    result = v.new_zeros(input_shape)
    for call, first, count, index in _pieces(draw, v.shape[0], layout, plan, v.device):
        vs = _take(call.take(v, False), first, count, index)
        if draw.scale != 1.0:
            vs = vs * draw.scale
        part = _input_slab(weight, vs, input_shape, geometry, call, plan)
        result = _add_rows(result, part, first, count, index, call.slab.low, functional)
    return result


def _input_slab(
    weight: torch.Tensor,
    vs: torch.Tensor,
    input_shape: tuple[int, ...],
    geometry: _Geometry,
    call: _TileCall,
    plan: _CallPlan,
) -> torch.Tensor:
    """One kernel call of :func:`tile_input_vjp`: the input VJP of the slab ``vs`` of ``v``,
    cut to the slab's rows of the input."""
    slab = call.slab
    inner = slab.high - slab.low
    rows = inner if slab.symmetric else slab.above + inner + slab.below
    shape = (vs.shape[0], input_shape[1], rows, *plan.sizes)
    part = exact_input_vjp(shape, weight, vs, geometry.stride, list(call.pad), geometry.dilation, geometry.groups)
    if not slab.symmetric:
        part = part.narrow(2, slab.above, inner)
    if plan.explicit:
        for dim, (lo, size) in enumerate(zip(geometry.left[1:], input_shape[3:])):
            part = part.narrow(3 + dim, lo, size)
    return part


def _add_rows(
    result: torch.Tensor,
    part: torch.Tensor,
    first: int,
    count: int,
    index: torch.Tensor | None,
    low: int,
    functional: bool,
) -> torch.Tensor:
    """``result[samples, :, low : low + rows] += part`` (samples ``first …`` or ``index``)."""
    rows, size = part.shape[2], result.shape[2]
    if functional:
        part = F.pad(part, [0, 0] * (result.dim() - 3) + [low, size - low - rows])
        if index is None and count == result.shape[0]:
            return result + part
        if index is None:
            index = torch.arange(first, first + count, device=result.device)
        return result.index_add(0, index, part)
    target = result.narrow(2, low, rows)
    if index is None:
        target.narrow(0, first, count).add_(part)
    else:
        target.index_add_(0, index, part)
    return result


__all__ = [
    "BYTE_RATE",
    "CALL_BYTES",
    "CALL_SECONDS",
    "FLOP_RATE",
    "HALO_FRACTION",
    "MAX_RUNS",
    "MAX_TILES",
    "TILE_MARGIN",
    "TileLayout",
    "TilePlan",
    "WEIGHT_CALLS",
    "call_count",
    "draw_units",
    "exact_input_vjp",
    "exact_weight_vjp",
    "expected_calls",
    "kept_fraction",
    "layout_seconds",
    "tile_input_vjp",
    "tile_layout",
    "tile_plan",
    "tile_setup",
    "tile_weight_vjp",
    "units",
]
