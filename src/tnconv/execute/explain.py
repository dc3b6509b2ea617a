"""``tnconv.explain``: which strategy ``"auto"`` picks for a network, its steps, and the cost
model's estimate of flops and bytes moved — without touching data.

The dispatcher tries the strategies in priority order; each has a data-free test of whether
it applies (``separable_plan``, ``square_recipe``, ``recognize``, ``structured_plan``).
For ``J · J'`` networks (curvature) :func:`~tnconv.execute.squares.square_recipe` costs each
lowering as ``flops + FLOPS_PER_BYTE · bytes`` and the cheapest wins; the explanation lists
every candidate it considered.

>>> import tnconv
>>> e = tnconv.explain(tnconv.networks.kfac_reduce((5, 768, 17, 17), 1))
>>> e.strategy, e.route
('square', 'separable')
>>> print(e.steps[0])
ū: sum of x over the trailing all-ones axes [5, 1, 768, 17, 17] -> [5, 1, 768, 1, 1] (read once)
>>> e = tnconv.explain(tnconv.networks.kfc((8, 16, 12, 12), 3, padding=1))
>>> e.route, e.chunks
('im2col', 1)
>>> with tnconv.chunk_budget(2**18):   # 256 KiB: J is 81 KiB per sample, 3 samples a chunk
...     tnconv.explain(tnconv.networks.kfc((8, 16, 12, 12), 3, padding=1)).chunks
3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..simplify.taps import TapTrim, trim_taps
from ..symbolic.network import TensorNetwork
from ..symbolic.squares import SquareNetwork
from . import small_vjp
from .budget import format_bytes, get_chunk_budget
from .col2im import col2im_plan
from .dispatch import auto_order, check_inputs
from .gemm_col2im import gemm_col2im_plan
from .im2col import batch_chunk, block_rows, im2col_plan
from .native import recognize
from .plan import dense_plan
from .separable import SeparablePlan, lowering_steps, separable_plan
from .squares import FLOPS_PER_BYTE, square_recipe
from .structured import structured_plan


@dataclass(frozen=True)
class Explanation:
    """What ``contract(network, tensors)`` (``strategy="auto"``) will do.

    Attributes:
        strategy: the registered strategy that applies first.
        route: the lowering inside it (``"im2col"``, ``"separable"``, … for squares; else the
            strategy's name).
        steps: one line per step, in order.
        flops: estimated multiply-adds.
        bytes: estimated bytes read and written (operands, copies, intermediates).
        candidates: ``(route, flops, bytes)`` of every lowering the cost model compared.
        chunks: how many batch chunks a chunked lowering (``"im2col"``) runs under the
            current chunk budget (``tnconv.chunk_budget``); 1 for every other lowering.
    """

    strategy: str
    route: str
    steps: tuple[str, ...]
    flops: int
    bytes: int
    candidates: tuple[tuple[str, int, int], ...] = field(default=())
    chunks: int = 1

    def __str__(self) -> str:
        lines = [f"strategy {self.strategy!r} (route {self.route!r}): ~{self.flops:,} flops, ~{self.bytes:,} bytes"]
        lines += [f"  {n}. {step}" for n, step in enumerate(self.steps, 1)]
        if self.candidates:
            lines.append(f"  cost model (flops + {FLOPS_PER_BYTE}·bytes):")
            lines += [f"    {name:12s} {f:>16,} flops {b:>16,} bytes" for name, f, b in self.candidates]
        return "\n".join(lines)


def _separable_steps(plan: SeparablePlan) -> list[str]:
    shape = list(plan.x_shape)
    lines = []
    if plan.ones:
        before = list(shape)
        shape = shape[: len(shape) - plan.ones] + [1] * plan.ones
        lines.append(f"ū: sum of x over the trailing all-ones axes {before} -> {shape} (read once)")
    blocked, products = lowering_steps(plan.lowering)
    sizes = {s.axis: "M" for s in plan.rest}
    if blocked:
        for step, blocks in zip(plan.blocked, plan.blocks):
            before = list(shape)
            shape[step.axis] = blocks.rows
            strided = f" (views of step {blocks.step})" if blocks.step > 1 else ""
            lines.append(
                f"ū: {blocks.rows} block sums{strided} over axis {step.axis} of {before} (each position read "
                f"at most once, no multiply-add) -> {shape}"
            )
            sizes[step.axis] = "C"
    if products == "kron":
        before = list(shape)
        inner = [shape[s.axis] for s in plan.rest]
        for s in plan.rest:
            shape[s.axis] = s.pattern.kernel_size
        taps = [s.pattern.kernel_size for s in plan.rest]
        names = " ⊗ ".join(f"{sizes[s.axis]}_{d + 1}" for d, s in enumerate(plan.rest))
        step = 1 if blocked else plan.row_step
        if step > 1:
            first = plan.rest[0]
            lines.append(
                f"ū: one GEMM over the rows of {before} that windows read (axis {first.axis}: rows {step}·o only, "
                f"a view; the others are never read) @ (M_2 ⊗ … ⊗ M_D)[{math.prod(inner[1:])}, {math.prod(taps)}], "
                f"then the sum over its {first.pattern.output_size} rows -> {shape}"
            )
        elif blocked:
            lines.append(
                f"ū: one GEMM {before} @ ({names})[{math.prod(inner)}, {math.prod(taps)}] over the flattened "
                f"window axes (C: which block sums make up each tap) -> {shape}"
            )
        else:
            lines.append(
                f"ū: one GEMM {before} @ (M_1 ⊗ … ⊗ M_D)[{math.prod(inner)}, {math.prod(taps)}] over the flattened "
                f"window axes (Σ of the windows, x read once in memory order) -> {shape}"
            )
    elif products == "axes":
        for s in plan.rest:
            size, taps, name = shape[s.axis], s.pattern.kernel_size, sizes[s.axis]
            before = list(shape)
            shape[s.axis] = taps
            if s.axis == len(shape) - 1 or math.prod(shape[s.axis + 1 :]) == 1:
                lines.append(
                    f"ū: {before} @ {name}[{size}, {taps}] (Σ of the windows) on the contiguous axis -> {shape}"
                )
            else:
                lines.append(f"ū: {name}ᵀ[{taps}, {size}] @ {before} on axis {s.axis} (batched, a view) -> {shape}")
    return lines


def _square(network: SquareNetwork, itemsize: int) -> tuple[str, list[str], int, int, tuple, int]:
    recipe = square_recipe(network.factor, network.keep, network.outer, network.scale, itemsize)  # type: ignore[arg-type]
    chunks = 1
    chosen = next(e for e in recipe.estimates if e[0] == recipe.route)
    keep, outer, summed = recipe.gram_shape
    gemm = f"J Jᵀ: bmm [{keep}, {outer}, {summed}] x its transpose -> [{keep}, {outer}, {outer}], scaled in place"
    if recipe.route == "direct":
        steps = [f"einsum {dense_plan(recipe.direct).equation} (the fused network)"]  # type: ignore[arg-type]
    elif recipe.route == "separable":
        steps = _separable_steps(separable_plan(network.factor)) + [gemm.replace("J Jᵀ", "ū ūᵀ")]  # type: ignore[arg-type]
    elif recipe.route == "im2col":
        plan = im2col_plan(recipe.factor)  # type: ignore[arg-type]
        budget = get_chunk_budget()
        chunk = batch_chunk(plan, itemsize, budget)  # type: ignore[arg-type]
        batch = plan.j_shape[plan.chunk_axis]  # type: ignore[union-attr]
        rows = block_rows(plan, itemsize, budget)  # type: ignore[arg-type]
        axis = plan.chunk_axis + 1  # type: ignore[union-attr]
        per_sample = itemsize * math.prod(plan.j_shape) // batch  # type: ignore[union-attr]
        chunks, plural = -(-batch // chunk), "s" if batch > chunk else ""
        pieces, buffer = f"{chunk} of {batch} samples ({chunks} chunk{plural})", chunk * per_sample
        if axis < len(plan.j_shape) and rows < plan.j_shape[axis]:  # type: ignore[union-attr]
            total = plan.j_shape[axis]  # type: ignore[union-attr]
            chunks = batch * -(-total // rows)
            pieces = f"{rows} of {total} output rows of one sample, each block padded on its own ({chunks} chunks)"
            buffer = per_sample * rows // total
        steps = [
            f"J: window view of x (no Π), copied once per chunk of {pieces} "
            f"into a reused buffer of {format_bytes(buffer)} (chunk budget {format_bytes(budget)})",
            gemm.replace("bmm", "bmm/baddbmm accumulated over chunks,"),
        ]
    else:
        steps = [f"J: contract {dense_plan(recipe.factor).equation} through the dispatcher", gemm]  # type: ignore[arg-type]
    return recipe.route, steps, chosen[1], chosen[2], recipe.estimates, chunks


def _trim_step(trim: TapTrim) -> str:
    full = dict(trim.original.sizes)
    taps = [(leg, n) for leg, _, n in trim.ranges if leg.startswith("k") and "'" not in leg]
    kept = math.prod(n for _, n in taps)
    total = math.prod(full[leg] for leg, _ in taps)
    cut = ", ".join(f"{leg} {full[leg]}→{n}" for leg, _, n in trim.ranges if "'" not in leg)
    return (
        f"trim taps: {kept}/{total} of the kernel's taps read the input ({cut}); the rest read only "
        "padding and give zero blocks"
    )


def _small_gemm(network: TensorNetwork, call, dtype: torch.dtype) -> bool:  # type: ignore[no-untyped-def]
    """Whether :mod:`.small_vjp` runs this native weight VJP as a GEMM on the CPU."""
    if call.dims != 1 or call.groups != 1 or call.scale != 1.0:
        return False
    x, v = (network.input_shape(name) for name in call.operands)
    p = call.patterns[0]
    return small_vjp.prefers_gemm(x[0], x[1], v[1], x[2], p.kernel_size, p.output_size, dtype, torch.device("cpu"))


def explain(
    network: TensorNetwork, *, dtype: torch.dtype = torch.float32, trim: bool = True, **inputs: object
) -> Explanation:
    """Explain how ``network`` would be contracted by ``strategy="auto"``.

    Args:
        network: any network (``tnconv.networks.*``).
        dtype: the data type assumed for the byte counts when no tensor is given.
        trim: ``False`` explains the network as if every kernel tap read the input (strategy
            ``"trim"`` skipped), to compare the work.
        inputs: optional, per input name, a tensor or a shape; they are checked against the
            network (a tensor also sets the data type).

    Returns:
        An :class:`Explanation` (print it for a readable report).
    """
    if not isinstance(network, TensorNetwork):
        raise TypeError(f"network must be a TensorNetwork, got {type(network).__name__}")
    tensors = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            dtype = value.dtype
        elif isinstance(value, (tuple, list, torch.Size)):
            tensors[name] = torch.empty(tuple(value), dtype=dtype, device="meta")
        else:
            raise TypeError(f"{name} must be a tensor or a shape, got {type(value).__name__}")
    if tensors:
        check_inputs(network, {k: v.to("meta") for k, v in tensors.items()})
    itemsize = torch.empty((), dtype=dtype).element_size()
    for name in auto_order():
        if name == "trim" and trim and (cut := trim_taps(network)) is not None:
            inner = explain(cut.network, dtype=dtype)
            out_bytes = itemsize * math.prod(network.output_shape) if cut.output[1] else 0
            steps = (_trim_step(cut), *inner.steps) + (("zero result, the kept block copied in",) if out_bytes else ())
            return Explanation(
                name, inner.route, steps, inner.flops, inner.bytes + out_bytes, inner.candidates, inner.chunks
            )
        if name == "separable" and (plan := separable_plan(network)) is not None:
            reads, writes = plan.bytes_per_element
            return Explanation(name, name, tuple(_separable_steps(plan)), plan.flops, itemsize * (reads + writes))
        if name == "square" and isinstance(network, SquareNetwork) and network.factor is not None:
            route, steps, flops, moved, candidates, chunks = _square(network, itemsize)
            return Explanation(name, route, tuple(steps), flops, moved, candidates, chunks)
        if name == "native" and (call := recognize(network)) is not None:
            moved = itemsize * (
                sum(math.prod(network.input_shape(n)) for n in network.inputs) + math.prod(call.output_shape)
            )
            flops = dense_plan(network.simplify()).flops
            step = f"torch {call.dims}-d convolution kernel ({call.kind}, groups={call.groups}), bias fused"
            if call.matrix_product:
                step = f"pointwise {call.kind} as a matrix product over channels (groups={call.groups}, no Π)"
            elif call.kind == "weight_vjp" and _small_gemm(network, call, dtype):
                step = "1-d weight VJP as one im2col GEMM (small: faster than oneDNN's call on the CPU; small_vjp)"
            return Explanation(name, name, (step,), flops, moved)
        if name == "col2im" and (cplan := col2im_plan(network)) is not None:
            taps = math.prod(p[3].kernel_size for p in cplan.patterns)
            size = math.prod(cplan.data_shape)
            steps = (
                f"zero buffer {list(cplan.output_shape)} padded by the windows' reach",
                f"{taps} strided in-place adds of {cplan.key}'s tap slices (no Π, no multiplication)",
                "crop the padding",
            )
            return Explanation(name, name, steps, size, itemsize * (3 * size + 2 * math.prod(cplan.output_shape)))
        if name == "gemm_col2im" and (gplan := gemm_col2im_plan(network)) is not None:
            data = explain(gplan.data, dtype=dtype)
            fold = explain(gplan.fold, dtype=dtype)
            steps = (
                f"u: the data alone, {dense_plan(gplan.data).equation} (no Π), via {data.strategy!r}",
                *fold.steps,
            )
            return Explanation(name, name, steps, data.flops + fold.flops, data.bytes + fold.bytes)
        if name == "structured" and (splan := structured_plan(network)) is not None:
            dplan = dense_plan(splan.network)
            steps = tuple(f"{key}: window views (Tensor.unfold, no Π)" for _, key, _, _ in splan.unfolds)
            return Explanation(name, name, (*steps, f"einsum {dplan.equation}"), dplan.flops, itemsize * dplan.moved)
        if name == "simplified":
            dplan = dense_plan(network.simplify())
            step = f"einsum {dplan.equation} of the simplified network"
            return Explanation(name, name, (step,), dplan.flops, itemsize * dplan.moved)
    raise RuntimeError("no execution strategy applies")  # unreachable: "simplified" always applies


__all__ = ["Explanation", "explain"]
