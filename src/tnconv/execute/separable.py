"""Strategy ``"separable"``: window sums as small matrices on the data's own axes.

KFAC-reduce's ``ū = Σ_o u`` (and ``Σ_{n,o} u`` of the bias row) is
``x[n, c, i_1…i_D] · Π_1[i_1,o_1,k_1] ⋯ Π_D[i_D,o_D,k_D]`` with every window leg ``o_d``
summed and carried by its pattern alone. Each ``Σ_o Π_d[i, o, k]`` is then a tiny
``[I_d, K_d]`` 0/1 matrix ``M_d`` (for a transposed convolution's unfold, whose data leg
is ``o``, ``M_d[o, k] = Σ_i Π_d[i, o, k]``), built from the hyper-parameters with
``arange`` (never from a dense ``Π``), and the network is ``x ×_D M_D ⋯ ×_1 M_1``:

1. trailing axes whose ``M`` is all ones (``K = 1``, stride 1, no padding: 1×1 layers) are
   summed together with one ``sum`` (a read of ``x`` in memory order);
2. the other axes by one of these lowerings, whichever the plan's time model estimates
   faster (:attr:`SeparablePlan.lowering`, :meth:`SeparablePlan.seconds`: a cost per
   multiply-add plus a fixed cost per matrix of a batched product, and for block sums costs
   per element read and written, per contiguous run and per block, all measured; a tie
   goes to the single call):

   - ``"kron"``: one GEMM ``x[rows, ∏I] @ (M_1 ⊗ ⋯ ⊗ M_D)[∏I, ∏K]`` over the flattened
     trailing axes (``∏K`` multiply-adds per element: the choice for 1×1 layers of any
     stride, whose ``M`` has one column; for a stride ``S > 1`` on short rows only every
     ``S``-th row of ``x`` is read, :attr:`SeparablePlan.row_step`);
   - ``"axes"``: axis by axis from the outermost, each a batched left product
     ``M_dᵀ[K_d, I_d] @ t[…, I_d, rest]`` on a *view* of the reduced tensor (wide, contiguous
     rows), the last axis a product with ``M_D`` (``K_1`` multiply-adds per
     element of ``x``, then ever smaller tensors);

   - ``"blocks+kron"`` / ``"blocks+axes"``: the window axes followed by 48–1023 contiguous
     elements (:attr:`SeparablePlan.blocked`: the outer axes of maps 48–1023 wide) first
     summed in blocks (:mod:`tnconv.execute.blocks`: a ``sum`` over a view per block of
     positions that the same taps read — three for a 3×3 layer of stride 1 — each position
     read at most once, no multiply-add), then one of the two products above on the reduced
     tensor, with the 0/1 matrix ``C`` that adds the blocks up to taps in place of ``M`` on
     those axes (on large maps ``M``'s skinny GEMMs ran at 5–10 GFLOP/s, several times the
     cost of one read of ``x``);

   every product with ``rows`` on one side is issued as ``(Mᵀ @ xᵀ)ᵀ`` — the small matrix on
   the left, ``x`` a transposed view (no copy): the same GEMM, which MKL runs 2–3× faster
   in that orientation when ``K > 1`` (a depthwise 3×3 on 7×7 maps: 11.7 → 5.4 ms for ū);
3. legs of ``x`` missing from the output (the batch of the bias row) are summed last.

No copy of ``x`` is made (no pad, no permute, no unfold). The only non-zero products are
those with ``M``'s (or ``C``'s) ones; where they are 0 a non-finite input would give
``0·NaN = NaN``, so a non-finite result (which a non-finite input the products multiply
always causes) is recomputed exactly as sums over strided window views — NaN/inf then reach
exactly the outputs whose windows read them, as with ``torch.nn.functional.unfold``.

>>> import torch, tnconv
>>> tn = tnconv.networks.kfac_reduce((2, 3, 9), 3, stride=2)
>>> x = torch.randn(2, 3, 9, dtype=torch.float64)
>>> torch.allclose(contract(tn, {"x": x}), contract(tn, {"x": x}, strategy="einsum"))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from torch._C._functorch import is_functorch_wrapped_tensor

from ..caching import cached
from ..spec.pattern import IndexPattern
from ..symbolic.network import TensorNetwork
from .blocks import WindowBlocks, block_sums, combination_matrix, window_blocks
from .dispatch import contract, known_finite, register_strategy
from .windows import Unfold, window_views

#: The time model that picks the lowering (one core, float32, MKL; fitted to interleaved
#: timings of both lowerings of ū on the 57 bundled layers they both apply to and on 57
#: random 2-d layers, docs/performance.md "Window sums"): a multiply-add of either lowering
#: costs this many seconds ...
MADD_SECONDS = 4.3e-11
#: ... and each matrix of a batched product this many more (its share of the batched
#: GEMM's calls, ≈ 3600 multiply-adds): on small maps with many channels (16×16 and below)
#: the per-axis lowering's thousands of batched products are dominated by it, and the single
#: Kronecker GEMM is faster despite 2–3× the multiply-adds.
SMALL_GEMM_SECONDS = 1.55e-7
#: The ``"blocks+…"`` lowerings' block sums (:mod:`tnconv.execute.blocks`; fitted the same
#: way to timings of the block sums alone on those layers, docs/performance.md "Window sums")
#: cost this many seconds per element read ...
BLOCK_READ_SECONDS = 3.0e-11
#: ... per contiguous run read (a sum over a middle axis is vectorised along the axes after
#: it: 7-element runs of 7×7 maps cost several times 112-element ones per element) ...
BLOCK_RUN_SECONDS = 2.9e-9
#: ... per element written (the block sums, then their ``stack``) ...
BLOCK_WRITE_SECONDS = 4.0e-10
#: ... and per block (one ``sum`` call over a view).
BLOCK_CALL_SECONDS = 7.6e-6
#: Only axes followed by at least ``BLOCK_MIN_RUN`` and fewer than ``BLOCK_MAX_RUN``
#: contiguous elements are summed in blocks. Below: on 14×14 – 32×32 maps block sums won
#: hot (0.6–0.8× the products) but lost cold (1.1–1.6×: torch's sum over a middle axis
#: with short rows runs far below a flat sum's rate once ``x`` is out of cache, stride 2 worst),
#: and a ``kfac_reduce_factor`` call rarely finds a large input in cache. Above: the same
#: sum over rows of 1024 elements and more ran at a third of a flat sum's rate
#: (``[64, 40, 4096]``: 4.2 ms against 1.5 ms), while the batched product with ``M`` streams
#: them (the outer axis of 3-d maps: ``[2, 32, 40, 64, 64]`` 3×3×3, blocked 7.1 ms, the
#: products 4.9 ms).
BLOCK_MIN_RUN = 48
BLOCK_MAX_RUN = 1024


@dataclass(frozen=True)
class AxisSum:
    """``Σ_w Π[…]`` over the private window leg of one pattern: the matrix ``M[data, k]``."""

    axis: int  # axis of x (after reshaping x to one dimension per leg)
    pattern: IndexPattern
    transposed: bool  # the data leg is Π's ``o`` (unfold of a transposed convolution's input)
    k_leg: str


@dataclass(frozen=True)
class SeparablePlan:
    """How :func:`contract_separable` evaluates a network ``x · Π_1 ⋯ Π_D`` with summed windows.

    ``x_shape`` is ``x`` with one dimension per leg (``x_legs``); ``sums`` are the per-axis
    matrices; ``summed`` the axes (after the sums) reduced at the end; ``order`` the
    permutation of the remaining axes to the output legs; ``output_shape`` the result's.
    """

    key: str
    x_shape: tuple[int, ...]
    x_legs: tuple[str, ...]
    sums: tuple[AxisSum, ...]
    summed: tuple[int, ...]
    order: tuple[int, ...]
    output_shape: tuple[int, ...]

    @cached_property
    def ones(self) -> int:
        """How many trailing axes are summed as all-ones (step 1 of the module docs)."""
        steps, last, count = sorted(self.sums, key=lambda s: -s.axis), len(self.x_shape) - 1, 0
        while count < len(steps) and steps[count].axis == last - count and _all_ones(steps[count]):
            count += 1
        return count

    @cached_property
    def rest(self) -> tuple[AxisSum, ...]:
        """The sums after the all-ones ones, outermost axis first."""
        return tuple(sorted(self.sums, key=lambda s: s.axis)[: len(self.sums) - self.ones])

    @cached_property
    def trailing_block(self) -> bool:
        """Whether the :attr:`rest` axes are consecutive and end where the all-ones ones start."""
        axes = [s.axis for s in self.rest]
        end = len(self.x_shape) - self.ones
        return bool(axes) and axes == list(range(end - len(axes), end))

    @cached_property
    def row_step(self) -> int:
        """``S`` when the ``"kron"`` lowering reads only every ``S``-th row of ``x``: the
        outermost window axis has ``K = 1``, stride ``S > 1``, no padding and ``I = S·O``
        (1×1 layers of stride ``S``), more window axes follow it, and their ``inner``
        elements per row are at most :data:`ROW_SKIP_MAX_INNER`. Its windows then read rows
        ``S·o`` and nothing else, so ``x`` is viewed as ``[…, O, S·inner]`` and only the first
        ``inner`` elements of each row group enter the product (a view: the other rows are
        never read, about half of ``x``'s memory traffic at stride 2); ``1`` otherwise."""
        rest = self.rest
        if not self.trailing_block or self.ones or len(rest) < 2:
            return 1
        if math.prod(self.x_shape[rest[0].axis + 1 :]) > ROW_SKIP_MAX_INNER:
            return 1
        first = rest[0]
        p = first.pattern
        exact_rows = p.input_size == p.stride * p.output_size  # rows S·o, o < O, and nothing past them
        selects_rows = p.kernel_size == 1 and p.stride > 1 and not p.padding and exact_rows
        if first.transposed or not selects_rows:
            return 1
        return p.stride

    @cached_property
    def permuted(self) -> bool:
        """Whether the reduced axes need :attr:`order` to reach the output legs' order."""
        return self.order != tuple(range(len(self.order)))

    @cached_property
    def kron_layout(self) -> tuple[int, tuple[int, ...]]:
        """The ``"kron"`` products' rows (the axes before the window axes, flattened) and the
        shape of their result (the window axes replaced by their taps): fixed per plan."""
        first, stop = self.rest[0].axis, self.rest[-1].axis + 1
        taps = tuple(s.pattern.kernel_size for s in self.rest)
        shape = self.x_shape[: len(self.x_shape) - self.ones] + (1,) * self.ones
        return math.prod(shape[:first]), (*shape[:first], *taps, *shape[stop:])

    @cached_property
    def blocked(self) -> tuple[AxisSum, ...]:
        """The :attr:`rest` axes the ``"blocks+…"`` lowerings sum in blocks first: those
        followed by :data:`BLOCK_MIN_RUN` to :data:`BLOCK_MAX_RUN` contiguous elements (so
        never the innermost one, whose block sums would be reductions along the contiguous
        rows themselves); the others keep their matrix."""
        shape = list(self.x_shape[: len(self.x_shape) - self.ones]) + [1] * self.ones
        return tuple(s for s in self.rest if BLOCK_MIN_RUN <= math.prod(shape[s.axis + 1 :]) < BLOCK_MAX_RUN)

    @cached_property
    def blocks(self) -> tuple[WindowBlocks, ...]:
        """:func:`~tnconv.execute.blocks.window_blocks` of each :attr:`blocked` axis."""
        return tuple(window_blocks(s.pattern, s.transposed) for s in self.blocked)

    def block_counts(self) -> tuple[int, int, int, int]:
        """``(elements read, contiguous runs read, elements written, block sums)`` of the
        ``"blocks+…"`` lowerings' first step."""
        shape = list(self.x_shape[: len(self.x_shape) - self.ones]) + [1] * self.ones
        read = runs = written = calls = 0
        for step, blocks in zip(self.blocked, self.blocks):
            elements = math.prod(shape) // shape[step.axis] * blocks.read
            read += elements
            runs += elements // math.prod(shape[step.axis + 1 :])
            calls += blocks.rows
            shape[step.axis] = blocks.rows
            written += math.prod(shape)
        return read, runs, written, calls

    def counts(self) -> dict[str, tuple[int, int, int, int]]:
        """``lowering -> (multiply-adds, elements read, elements written, batched matrices)``
        of each lowering of step 2 that applies (``"kron"`` only when the window axes are the
        trailing block; its one GEMM has no batched matrices; ``"blocks+kron"`` and
        ``"blocks+axes"`` when some axis can be summed in blocks first, the products then
        on the reduced tensor, the block sums' reads included)."""
        shape = list(self.x_shape)
        ones = self.ones
        reads = writes = 0
        if ones:
            reads, shape = math.prod(shape), shape[: len(shape) - ones] + [1] * ones
            writes = math.prod(shape)
        counts = self._product_counts(shape, reads, writes, self.row_step)
        if self.blocked:
            blocked_reads, _, _, _ = self.block_counts()
            reduced = list(shape)
            for step, blocks in zip(self.blocked, self.blocks):
                reduced[step.axis] = blocks.rows
            written = writes + math.prod(reduced)
            for name, value in self._product_counts(reduced, reads + blocked_reads, written, 1).items():
                counts[f"blocks+{name}"] = value
        return counts

    def _product_counts(
        self, shape: list[int], reads: int, writes: int, row_step: int
    ) -> dict[str, tuple[int, int, int, int]]:
        """:meth:`counts` of the products ``"kron"`` / ``"axes"`` on a tensor of ``shape``."""
        counts = {}
        rest = self.rest
        if self.trailing_block:
            size = math.prod(shape)
            taps = math.prod(s.pattern.kernel_size for s in rest)
            written = size * taps // math.prod(shape[s.axis] for s in rest)
            read = size // row_step  # (only the rows its windows read: see row_step)
            counts["kron"] = (read * taps, reads + read, writes + written, 0)
        flops, r, w, matrices = 0, reads, writes, 0
        shape = list(shape)
        for step in rest:
            size = math.prod(shape)
            flops += size * step.pattern.kernel_size
            if math.prod(shape[step.axis + 1 :]) > 1:  # a batched left product: one small GEMM per row
                matrices += math.prod(shape[: step.axis])
            r += size
            shape[step.axis] = step.pattern.kernel_size
            w += math.prod(shape)
        counts["axes"] = (flops, r, w, matrices)
        return counts

    def seconds(self, lowering: str) -> float:
        """The time model's estimate for ``lowering`` (a key of :meth:`counts`, one core):
        :data:`MADD_SECONDS` per multiply-add plus :data:`SMALL_GEMM_SECONDS` per batched
        matrix, and for ``"blocks+…"`` the block sums' cost (:data:`BLOCK_READ_SECONDS`,
        :data:`BLOCK_RUN_SECONDS`, :data:`BLOCK_WRITE_SECONDS`, :data:`BLOCK_CALL_SECONDS` on
        :meth:`block_counts`; every lowering reads ``x`` once, so its bytes alone do not tell
        them apart)."""
        madds, _, _, matrices = self.counts()[lowering]
        seconds = madds * MADD_SECONDS + matrices * SMALL_GEMM_SECONDS
        if lowering_steps(lowering)[0]:
            read, runs, written, calls = self.block_counts()
            seconds += (
                read * BLOCK_READ_SECONDS
                + runs * BLOCK_RUN_SECONDS
                + written * BLOCK_WRITE_SECONDS
                + calls * BLOCK_CALL_SECONDS
            )
        return seconds

    @cached_property
    def lowering(self) -> str:
        """``"sum"`` (all axes all-ones), ``"kron"``, ``"axes"``, ``"blocks+kron"`` or
        ``"blocks+axes"`` (see the module docs)."""
        if not self.rest:
            return "sum"
        return min(self.counts(), key=lambda name: (self.seconds(name), name != "kron", name))

    @property
    def flops(self) -> int:
        """Multiply-adds of the chosen lowering (the final sums are counted as reads)."""
        return 0 if self.lowering == "sum" else self.counts()[self.lowering][0]

    @property
    def madd_equivalents(self) -> int:
        """The chosen lowering's estimated time in multiply-adds (what the other routes of a
        square network are counted in): its multiply-adds plus its batched matrices' fixed
        costs."""
        return 0 if self.lowering == "sum" else round(self.seconds(self.lowering) / MADD_SECONDS)

    @property
    def bytes_per_element(self) -> tuple[int, int]:
        """Elements read and written: ``x`` once, plus the (small) intermediates."""
        if self.lowering == "sum":
            shape = self.x_shape
            return math.prod(shape), math.prod(shape[: len(shape) - self.ones])
        return self.counts()[self.lowering][1:3]


@cached(maxsize=1024)
def separable_plan(network: TensorNetwork) -> SeparablePlan | None:
    """The plan if ``network`` is one data input times patterns whose window legs are private
    and summed (and whose ``k`` legs are open); ``None`` otherwise (also for sliced networks)."""
    if network.slices:
        return None
    inputs = [n for n in network.nodes if n.kind == "input"]
    others = [n for n in network.nodes if n.kind != "input"]
    if len(inputs) != 1 or not others or any(n.kind != "pattern" for n in others):
        return None
    x = inputs[0]
    legs = x.legs
    if len(set(legs)) != len(legs):
        return None
    out = set(network.output_legs)
    sums = []
    for node in others:
        i, o, k = node.legs
        if i in legs and o not in legs:
            data, window, transposed = i, o, False
        elif o in legs and i not in legs:
            data, window, transposed = o, i, True
        else:
            return None
        if k in legs or k not in out or window in out or data in out:
            return None
        if any(n is not node and (window in n.legs or k in n.legs or data in n.legs) for n in others):
            return None
        sums.append(AxisSum(legs.index(data), node.pattern, transposed, k))  # type: ignore[arg-type]
    if len({s.axis for s in sums}) != len(sums):
        return None
    after = list(legs)
    for s in sums:
        after[s.axis] = s.k_leg
    output_legs = network.output_legs
    if len(set(output_legs)) != len(output_legs) or not set(output_legs) <= set(after):
        return None
    summed = tuple(a for a, leg in enumerate(after) if leg not in out)
    rest = [leg for leg in after if leg in out]
    order = tuple(rest.index(leg) for leg in output_legs)
    x_shape = tuple(network.size(leg) for leg in legs)
    return SeparablePlan(x.key, x_shape, legs, tuple(sums), summed, order, network.output_shape)


@cached(maxsize=256, tensors=True, bypassable=False)
def window_count_matrix(
    pattern: IndexPattern, transposed: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``M[i, k] = Σ_o Π[i, o, k]`` (``[I, K]``), or ``transposed``: ``M[o, k] = Σ_i Π[i, o, k]``
    (``[O, K]``), from the hyper-parameters (``O(I·K)``, no dense ``Π``)."""
    taps = torch.arange(pattern.kernel_size, device=device).view(1, -1) * pattern.dilation
    if transposed:
        position = torch.arange(pattern.output_size, device=device).view(-1, 1) * pattern.stride + taps
        position = position - pattern.padding
        return ((position >= 0) & (position < pattern.input_size)).to(dtype)
    r = torch.arange(pattern.input_size, device=device).view(-1, 1) + pattern.padding - taps
    o = torch.div(r, pattern.stride, rounding_mode="floor")
    return ((r >= 0) & (r % pattern.stride == 0) & (o < pattern.output_size)).to(dtype)


@cached(maxsize=256, tensors=True, bypassable=False)
def kron_count_matrix(
    steps: tuple[tuple[IndexPattern, bool] | tuple[IndexPattern, bool, WindowBlocks | None], ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``M_1 ⊗ ⋯ ⊗ M_D`` (``[∏I, ∏K]``) of the :func:`window_count_matrix` of ``steps``
    (``(pattern, transposed)`` per axis, outermost first); a step ``(pattern, transposed,
    blocks)`` with ``blocks`` not ``None`` contributes the combination matrix ``C`` of its
    block sums instead (:func:`~tnconv.execute.blocks.combination_matrix`)."""
    result = torch.ones((1, 1), dtype=dtype, device=device)
    for pattern, transposed, *blocks in steps:
        result = torch.kron(result, _axis_matrix(pattern, transposed, blocks[0] if blocks else None, dtype, device))
    return result


def _axis_matrix(
    pattern: IndexPattern, transposed: bool, blocks: WindowBlocks | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The matrix of one window axis: ``M`` (``[I, K]``), or after its block sums ``C`` (``[rows, K]``)."""
    if blocks is not None:
        return combination_matrix(blocks, dtype, device)
    return window_count_matrix(pattern, transposed, dtype, device)


def _all_ones(step: AxisSum) -> bool:
    p = step.pattern
    return p.kernel_size == 1 and (
        (not step.transposed and p.is_identity)
        or (step.transposed and p.stride == 1 and p.padding == 0 and p.input_size == p.output_size)
    )


#: :attr:`SeparablePlan.row_step` skips rows only when a row holds at most this many elements
#: (the window axes after the first, flattened): the product then runs over ``O``× more,
#: ``O``× shorter rows, which paid off only for short rows. Measured (one
#: thread, ``kfac_reduce_factor`` with and without the skip alternated, 16 layers 1×1 of
#: stride 2–3): rows of 12–32 elements 0.47–1.03× the time hot and cold (14×14 maps
#: 0.47–0.63), rows of 42–56 elements and 3-d maps 1.06–1.29×.
ROW_SKIP_MAX_INNER = 32

#: The most bytes of ``M`` matrices a bound runner keeps for itself (per dtype and device);
#: larger ones are looked up in their byte-bounded cache on every call.
KEPT_MATRIX_BYTES = 2**20


#: lowering -> (whether its first step is block sums, the products after it)
_LOWERINGS = {
    "sum": (False, "sum"),
    "kron": (False, "kron"),
    "axes": (False, "axes"),
    "blocks+kron": (True, "kron"),
    "blocks+axes": (True, "axes"),
}


def lowering_steps(lowering: str) -> tuple[bool, str]:
    """``"blocks+kron"`` -> ``(True, "kron")``; ``"axes"`` -> ``(False, "axes")``: whether a
    lowering sums blocks first, and the products after it."""
    split = _LOWERINGS.get(lowering)
    if split is None:
        raise ValueError(f"lowering must be one of {', '.join(map(repr, _LOWERINGS))}, got {lowering!r}")
    return split


def _step_blocks(plan: SeparablePlan, blocked: bool) -> list[WindowBlocks | None]:
    """Per :attr:`SeparablePlan.rest` axis, its blocks when the lowering sums it in blocks."""
    by_axis = dict(zip((s.axis for s in plan.blocked), plan.blocks)) if blocked else {}
    return [by_axis.get(s.axis) for s in plan.rest]


def _kron_matrix(plan: SeparablePlan, dtype: torch.dtype, device: torch.device, blocked: bool = False) -> torch.Tensor:
    """The ``"kron"`` lowering's matrix: ``M_1 ⊗ ⋯ ⊗ M_D`` of the window axes, without the
    outermost one when its rows are selected by a view instead (:attr:`SeparablePlan.row_step`);
    ``blocked``: ``C`` instead of ``M`` for the axes summed in blocks (``"blocks+kron"``)."""
    if blocked:
        steps = tuple((s.pattern, s.transposed, b) for s, b in zip(plan.rest, _step_blocks(plan, True)))
        return kron_count_matrix(steps, dtype, device)
    rest = plan.rest[1:] if plan.row_step > 1 else plan.rest
    return kron_count_matrix(tuple((s.pattern, s.transposed) for s in rest), dtype, device)


def lowering_matrices(
    plan: SeparablePlan, dtype: torch.dtype, device: torch.device, lowering: str | None = None
) -> tuple[torch.Tensor, ...]:
    """The operands of :func:`reduce_windows`' products for ``plan`` and ``lowering`` (default:
    the plan's): one Kronecker matrix (``"kron"``, ``"blocks+kron"``), or per axis the matrix of
    the contiguous last axis and the transposed ones (views) of the batched left products
    (``"axes"``, ``"blocks+axes"``); empty for ``"sum"``."""
    blocked, products = lowering_steps(plan.lowering if lowering is None else lowering)
    if products == "kron":
        return (_kron_matrix(plan, dtype, device, blocked),)
    if products == "axes":
        matrices = []
        shape = list(plan.x_shape[: len(plan.x_shape) - plan.ones]) + [1] * plan.ones
        steps = list(zip(plan.rest, _step_blocks(plan, blocked)))
        for step, blocks in steps:
            if blocks is not None:
                shape[step.axis] = blocks.rows
        for step, blocks in steps:  # as reduce_windows walks the axes
            m = _axis_matrix(step.pattern, step.transposed, blocks, dtype, device)
            matrices.append(m if math.prod(shape[step.axis + 1 :]) == 1 else m.t())
            shape[step.axis] = step.pattern.kernel_size
        return tuple(matrices)
    return ()


def reduce_windows(
    t: torch.Tensor, plan: SeparablePlan, lowering: str | None = None, matrices: tuple[torch.Tensor, ...] | None = None
) -> torch.Tensor:
    """``x ×_d M_d`` of ``plan`` (``t`` is ``x`` shaped ``plan.x_shape``), the window axes
    replaced by their taps, by ``lowering`` (default: the plan's, see the module docs);
    ``matrices``: :func:`lowering_matrices` of that lowering, if at hand."""
    ones = plan.ones
    if ones:  # trailing all-ones axes (1×1 layers): one sum over a flattened view
        t = t.reshape(*t.shape[: t.dim() - ones], -1).sum(-1)
        t = t.view(*t.shape, *([1] * ones))
    rest = plan.rest
    if not rest:
        return t
    lowering = plan.lowering if lowering is None else lowering
    if matrices is None:
        matrices = lowering_matrices(plan, t.dtype, t.device, lowering)
    blocked, products = lowering_steps(lowering)
    if blocked:  # each position of the outer window axes read once, by a sum over its block
        for step, blocks in zip(plan.blocked, plan.blocks):
            t = block_sums(t, step.axis, blocks)
    if products == "kron":
        count, shape = plan.kron_layout
        m, step = matrices[0], 1 if blocked else plan.row_step
        if step > 1:  # rows S·o only, a view [rows·O, inner] with row stride S·inner
            outputs, inner = rest[0].pattern.output_size, math.prod(t.shape[rest[0].axis + 1 :])
            rows = t.reshape(count, outputs, step * inner)[..., :inner].reshape(-1, inner)
            reduced = torch.mv(rows, m[:, 0]).unsqueeze(1) if m.shape[1] == 1 else (m.t() @ rows.t()).t()
            return reduced.view(count, outputs, -1).sum(1).reshape(shape)
        # (Mᵀ[∏K, ∏I] @ x[rows, ∏I]ᵀ)ᵀ: the same GEMM with the small matrix on the left,
        # the orientation MKL runs 2-3× faster when ∏K > 1 (a strided view, no copy)
        return (m.t() @ t.reshape(count, -1).t()).t().reshape(shape)
    for index, step in enumerate(rest):
        lead, size, after = t.shape[: step.axis], t.shape[step.axis], t.shape[step.axis + 1 :]
        m, taps = matrices[index], step.pattern.kernel_size
        if math.prod(after) == 1:  # the last axis: Mᵀ @ tᵀ, the fast orientation (as for "kron")
            t = (m.t() @ t.reshape(-1, size).t()).t().reshape(*lead, taps, *after)
        else:  # Mᵀ @ [rows, I, rest]: a batched product on a view, wide contiguous rows
            t = torch.matmul(m, t.reshape(math.prod(lead), size, -1)).view(*lead, taps, *after)
    return t


def _reduce_exact(t: torch.Tensor, plan: SeparablePlan) -> torch.Tensor:
    """The same sums over strided window views: non-finite values reach only their windows."""
    steps = sorted(plan.sums, key=lambda s: -s.axis)
    for step in steps:
        p = step.pattern
        if step.transposed:  # u[…, i, k] = x[…, o] with i = S·o + Dl·k − P: sum over i = over the valid o
            m = window_count_matrix(p, True, torch.bool, t.device)  # [O, K]
            expanded = t.movedim(step.axis, -1).unsqueeze(-1)  # [..., O, 1]
            zero = torch.zeros((), dtype=t.dtype, device=t.device)
            t = torch.where(m, expanded, zero).sum(-2).movedim(-1, step.axis)
        else:
            view = window_views(t, {step.axis: Unfold("i", p, t.shape[step.axis])})  # [..., O, K, ...]
            t = view.sum(step.axis)
    return t


def _run(
    plan: SeparablePlan, tensors: Mapping[str, torch.Tensor], matrices: tuple[torch.Tensor, ...] | None = None
) -> torch.Tensor:
    x = tensors[plan.key].reshape(plan.x_shape)
    # the fast lowering multiplies by the zeros of [I, K]: a non-finite ū (or one that cannot
    # be read, under torch.func) is computed again by the exact window-view sums
    t = None if is_functorch_wrapped_tensor(x) else reduce_windows(x, plan, None, matrices)
    if t is None or not known_finite(t):
        t = _reduce_exact(x, plan)
    if plan.summed:
        t = t.sum(plan.summed)
    if plan.permuted:
        t = t.permute(plan.order)
    return t.reshape(plan.output_shape)


def contract_separable(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Strategy ``"separable"``: ``x ×_d M_d`` on the data's axes (see the module docs)."""
    plan = separable_plan(network)
    return None if plan is None else _run(plan, tensors)


def _bind(network: TensorNetwork) -> Callable[..., torch.Tensor] | None:
    """The runner of ``network``'s plan; it keeps its (small) matrices per dtype and device
    instead of looking them up in their cache on every call."""
    plan = separable_plan(network)
    if plan is None:
        return None
    kept: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def runner(tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        x = tensors[plan.key]
        matrices = kept.get((x.dtype, x.device))
        if matrices is None:
            matrices = lowering_matrices(plan, x.dtype, x.device)
            if sum(m.numel() * m.element_size() for m in matrices) <= KEPT_MATRIX_BYTES:
                kept[(x.dtype, x.device)] = matrices
        return _run(plan, tensors, matrices)

    return runner


def window_sums(network: TensorNetwork, x: torch.Tensor) -> torch.Tensor:
    """Evaluate a separable ``network`` (input ``x``) through the dispatcher."""
    return contract(network, {separable_plan(network).key: x}, "separable")  # type: ignore[union-attr]


register_strategy(
    "separable",
    contract_separable,
    "window sums Σ_o Π as small matrices on the data's axes, x read once (KFAC-reduce)",
    priority=5,
    bind=_bind,
)

__all__ = [
    "SeparablePlan",
    "contract_separable",
    "kron_count_matrix",
    "lowering_matrices",
    "lowering_steps",
    "reduce_windows",
    "separable_plan",
    "window_count_matrix",
    "window_sums",
]
