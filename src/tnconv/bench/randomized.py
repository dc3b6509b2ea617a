"""Benchmark of randomized weight VJPs (SPEC §6) under the protocol of SPEC §7.

For every case and ``keep`` it times three implementations of the weight VJP, alternating
them, median of ``repeats`` runs after a warm-up, in one process:

- ``randomized``: :func:`tnconv.randomized.conv_weight_vjp` (a new draw every run; at
  ``keep = 1`` the exact VJP network);
- ``exact``: ``torch.nn.grad.conv{D}d_weight``, SPEC §7's baseline for the weight VJP;
- ``masked``: the same estimator computed by zeroing the dropped part of ``v``
  (rescaled), then ``torch.nn.grad.conv{D}d_weight`` — what dropout-style implementations
  do, at the cost of the full VJP.

It also reports the relative error ``‖Ĝ − G‖ / ‖G‖`` of one draw and the FLOPs of the
contraction plan (``tnconv.contract.dense_plan(network).flops``) relative to that of the
same network with every position kept. Run ``python -m tnconv.bench.randomized --help``.

>>> case = BenchCase("demo", "0", (1, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
>>> rows = run([case], keeps=(1.0, 0.5), repeats=1, batch=2)
>>> [(row["keep"], row["flops_fraction"]) for row in rows]
[(1.0, 1.0), (0.5, 0.5)]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import randomized
from ..contract import dense_plan
from ..hyperparams import conv_geometry

KEEPS = (1.0, 0.5, 0.25, 0.1)
BATCH_BUDGET, MAX_BATCH = 2**21, 64
TORCH_WEIGHT_VJP = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}


@dataclass(frozen=True)
class BenchCase:
    """One convolution layer of a cases file (attribute names as in the JSON lines)."""

    model: str
    name: str
    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    transposed: bool = False

    @property
    def dims(self) -> int:
        return len(self.input_shape) - 2

    @property
    def label(self) -> str:
        return f"{self.model}/{self.name}"

    def output_spatial_size(self) -> tuple[int, ...]:
        geometry = conv_geometry(self.input_shape[2:], self.kernel_size, self.stride, self.padding, self.dilation)
        return geometry.output_size


def load_cases(path: str | Path) -> list[BenchCase]:
    """Read a JSON-lines cases file (the format of ``shared/bench/convs.jsonl``)."""
    cases = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        dims = len(record["input_shape"]) - 2

        def spatial(key: str, default: int, record: dict = record, dims: int = dims) -> tuple[int, ...]:
            value = record.get(key, default)
            return tuple(value) if isinstance(value, list) else (value,) * dims

        cases.append(
            BenchCase(
                record.get("model", Path(path).stem),
                str(record.get("name", number)),
                tuple(record["input_shape"]),
                record["out_channels"],
                spatial("kernel_size", 1),
                spatial("stride", 1),
                spatial("padding", 0),
                spatial("dilation", 1),
                record.get("groups", 1),
                record.get("transposed", False),
            )
        )
    return cases


def batch_size(case: BenchCase) -> int:
    """SPEC §7: ``clamp(2**21 // (C_in·∏I), 1, 64)``."""
    return max(1, min(MAX_BATCH, BATCH_BUDGET // math.prod(case.input_shape[1:])))


def _masked_vjp(
    case: BenchCase, x: torch.Tensor, v: torch.Tensor, keep: float, leg: str, mode: str, generator: torch.Generator
) -> torch.Tensor:
    """The same estimator by masking ``v`` (the dropped part zeroed, the rest rescaled)."""
    hyper = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    weight_shape = (case.out_channels, case.input_shape[1] // case.groups, *case.kernel_size)
    vjp = TORCH_WEIGHT_VJP[case.dims]
    if keep == 1.0:
        return vjp(x, weight_shape, v, **hyper)
    if leg == "spatial":
        dims, shape = list(range(2, v.dim())), [1, 1, *v.shape[2:]]
    elif leg == "batch":
        dims, shape = [0], [v.shape[0]] + [1] * (v.dim() - 1)
    else:
        d = 1 + int(leg.split(":")[1])
        dims, shape = [d], [1] * v.dim()
        shape[d] = v.shape[d]
    size = math.prod(v.shape[d] for d in dims)
    draw = randomized.sample(size, keep, mode, generator)
    mask = torch.zeros(size, dtype=v.dtype, device=v.device)
    if draw is not None:
        mask[torch.tensor(draw.indices, device=v.device)] = draw.scale
    return vjp(x, weight_shape, v * mask.view(shape), **hyper)


def _plan_flops_fraction(case: BenchCase, x: torch.Tensor, v: torch.Tensor, keep: float, leg: str) -> float:
    """FLOPs of the plan that contracts ``ceil(keep·size)`` kept values, over that of all kept."""
    network = randomized.weight_vjp_network(
        x.shape, v.shape, case.kernel_size, case.stride, case.padding, case.dilation, case.groups
    )
    target = randomized.network_leg(leg)
    if target is None:
        network, target = randomized.windows_network(network), randomized.JOINT
    size = network.size(target)

    def flops(count: int) -> int:
        draw = randomized.Draw(tuple(range(count)), 1.0)
        return dense_plan(randomized.sliced_network(network, target, draw).simplify()).flops

    return flops(randomized.fixed_count(size, keep)) / flops(size)


def _timed(thunks: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per implementation: a warm-up, then ``repeats`` alternating rounds."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for thunk in thunks.values():
        thunk()
    times: dict[str, list[float]] = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            sync()
            start = time.perf_counter()
            thunk()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(
    case: BenchCase,
    keep: float,
    *,
    leg: str = "spatial",
    mode: str = "fixed",
    repeats: int = 5,
    batch: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, object]:
    """One row of the benchmark: times (seconds), ratios, FLOPs fraction and one draw's error."""
    device = torch.device(device)
    batch = batch or batch_size(case)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *case.input_shape[1:]), generator=gen, dtype=dtype).to(device)
    v = torch.randn((batch, case.out_channels, *case.output_spatial_size()), generator=gen, dtype=dtype).to(device)
    hyper = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    options = dict(keep=keep, leg=leg, mode=mode, generator=gen)
    exact = _masked_vjp(case, x, v, 1.0, leg, mode, gen)
    one_draw = randomized.conv_weight_vjp(x, v, case.kernel_size, **hyper, **options)
    times = _timed(
        {
            "randomized": lambda: randomized.conv_weight_vjp(x, v, case.kernel_size, **hyper, **options),
            "exact": lambda: _masked_vjp(case, x, v, 1.0, leg, mode, gen),
            "masked": lambda: _masked_vjp(case, x, v, keep, leg, mode, gen),
        },
        repeats,
        device,
    )
    return {
        "case": case.label,
        "batch": batch,
        "keep": keep,
        "leg": leg,
        "mode": mode,
        **{f"{name}_s": seconds for name, seconds in times.items()},
        "vs_exact": times["randomized"] / times["exact"],
        "vs_masked": times["randomized"] / times["masked"],
        "flops_fraction": _plan_flops_fraction(case, x, v, keep, leg),
        "relative_error": float((one_draw - exact).norm() / exact.norm()),
    }


def run(cases: Iterable[BenchCase], keeps: Sequence[float] = KEEPS, **options: object) -> list[dict[str, object]]:
    """:func:`measure` every non-transposed case with ``D ≤ 3`` at every ``keep``."""
    rows = []
    for case in cases:
        if case.transposed or case.dims > 3:
            continue
        for keep in keeps:
            rows.append(measure(case, keep, **options))  # type: ignore[arg-type]
    return rows


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """A plain-text table of :func:`run`'s rows and the median ratios per ``keep``."""
    header = (
        f"{'case':<34} {'N':>3} {'keep':>5} {'rand ms':>9} {'exact ms':>9} {'mask ms':>9} "
        f"{'/exact':>7} {'/mask':>7} {'FLOPs':>6} {'rel.err':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['case']:<34} {row['batch']:>3} {row['keep']:>5.2f} {1e3 * row['randomized_s']:>9.2f} "  # type: ignore[operator]
            f"{1e3 * row['exact_s']:>9.2f} {1e3 * row['masked_s']:>9.2f} {row['vs_exact']:>7.2f} "  # type: ignore[operator]
            f"{row['vs_masked']:>7.2f} {row['flops_fraction']:>6.3f} {row['relative_error']:>8.3f}"
        )
    lines.append("")
    lines.append("median over cases:  keep   rand/exact   rand/masked   FLOPs fraction   rel. error")
    for keep in sorted({row["keep"] for row in rows}, reverse=True):  # type: ignore[type-var]
        some = [row for row in rows if row["keep"] == keep]

        def median(key: str, some: list = some) -> float:
            return statistics.median(float(row[key]) for row in some)

        lines.append(
            f"{'':<20}{keep:>5.2f} {median('vs_exact'):>12.2f} {median('vs_masked'):>13.2f} "
            f"{median('flops_fraction'):>16.3f} {median('relative_error'):>12.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tnconv.bench.randomized",
        description="Time randomized weight VJPs against the exact VJP and against masking.",
    )
    parser.add_argument("--cases", required=True, help="JSON-lines cases file (format of shared/bench/convs.jsonl)")
    parser.add_argument("--only", default="", help="comma-separated model or model/name filters")
    parser.add_argument("--limit", type=int, default=None, help="at most this many cases")
    parser.add_argument("--keeps", default=",".join(map(str, KEEPS)), help="comma-separated kept fractions")
    parser.add_argument("--leg", default="spatial", help="spatial, spatial:d or batch")
    parser.add_argument("--mode", default="fixed", choices=randomized.MODES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override SPEC §7's batch-size rule")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cases = load_cases(args.cases)
    if args.only:
        wanted = args.only.split(",")
        cases = [c for c in cases if c.model in wanted or c.label in wanted]
    cases = [c for c in cases if not c.transposed and c.dims <= 3][: args.limit]
    keeps = tuple(float(k) for k in args.keeps.split(","))
    rows = run(cases, keeps, leg=args.leg, mode=args.mode, repeats=args.repeats, batch=args.batch, device=args.device)
    print(format_table(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
