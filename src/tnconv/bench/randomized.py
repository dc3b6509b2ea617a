"""Benchmark of randomized weight VJPs (docs/reference.md §6) under the protocol of docs/reference.md §7.

For every case and ``keep`` it times three implementations of the weight VJP in one
process: after a warm-up, rounds that call each once, in an order that rotates from round
to round. The ratios (``/exact``, ``/mask``) are the medians of the *per-round* ratios, the
two calls of a ratio having run next to each other (``spread``: half the interquartile range
of the per-round ``randomized/exact`` over their median; ``mean``: their mean, the expected
cost of a draw, which in Bernoulli mode — skewed kept counts, e.g. mostly empty draws of
the few units of an ``N = 1`` layer at low keep — can lie well above the median). A case measured while the
machine was noisy (``masked/exact`` spreading by more than :data:`NOISE`) is re-measured
with as many rounds again, at most :data:`MAX_EXTENSIONS` times
(``rnds``: the rounds taken). Small layers get more than ``repeats`` rounds, enough for
:data:`MIN_SECONDS` of calls of the exact VJP or masking (never sized on the randomized
call, whose time varies with the draw in Bernoulli mode); in Bernoulli mode the estimator
is called at least :data:`MIN_DRAWS` times (a round's cell the mean of its calls). The implementations:

- ``randomized``: :func:`tnconv.randomized.conv_weight_vjp` (a new draw every run; at
  ``keep = 1`` PyTorch's kernel, called directly);
- ``exact``: ``torch.nn.grad.conv{D}d_weight``, docs/reference.md §7's baseline for the weight VJP;
- ``masked``: the same estimator computed by zeroing the dropped part of ``v``
  (rescaled), then ``torch.nn.grad.conv{D}d_weight`` — what dropout-style implementations
  do, at the cost of the full VJP. At ``keep = 1`` it *is* the exact VJP's call, so its
  ratio to ``exact`` there (the table's last line) is the noise floor of the measurement.

It also reports the relative error ``‖Ĝ − G‖ / ‖G‖`` of one draw, the *error at equal
time* ``rel.err · sqrt(time / exact time)`` (the error of the mean of as many independent
draws as fit in the time of one exact VJP: the figure of merit to compare estimators by),
and the FLOPs of the plan relative to that with everything kept (the tile plan of
:func:`tnconv.randomized.tiles.tile_plan` for ``leg="spatial"``, the contraction plan
``tnconv.execute.plan.dense_plan(network).flops`` otherwise). ``--legs spatial,positions``
compares estimators side by side. Run ``python -m tnconv.bench.randomized --help``.

>>> case = Case("demo", "0", (1, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), (1, 1))
>>> rows = run([case], keeps=(1.0, 0.5), repeats=1, batch=2)
>>> [(row["keep"], row["flops_fraction"]) for row in rows]
[(1.0, 1.0), (0.5, 0.5)]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from ..execute.plan import dense_plan
from ..randomized import estimators, rewrites, sampling, tiles
from .cases import Case, batch_size, bundled_cases, load_cases

KEEPS = (1.0, 0.5, 0.25, 0.1)
TORCH_WEIGHT_VJP = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
#: Layers run by default (those of the README's table): plain layers of several kinds.
DEFAULT_LAYERS = (
    "cifar10_3c3d/3",
    "cifar100_allcnnc/4",
    "resnet18/layer2.0.conv1",
    "resnet18/layer3.0.conv2",
    "mobilenet_v2/features.8.conv.1.0",
    "mobilenet_v2/features.8.conv.2",
    "alexnet/features.3",
    "vgg16/features.24",
    "m5_audio/3",
)


def applies(case: Case) -> bool:
    """Plain (not transposed) convolutions with ``D ≤ 3``: torch has their weight VJP."""
    return not case.transposed and case.dims <= 3


def _masked_vjp(
    case: Case, x: torch.Tensor, v: torch.Tensor, keep: float, leg: str, mode: str, generator: torch.Generator
) -> torch.Tensor:
    """The same estimator by masking ``v`` (the dropped part zeroed, the rest rescaled)."""
    hyper = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    weight_shape = case.weight_shape()
    vjp = TORCH_WEIGHT_VJP[case.dims]
    if keep == 1.0:
        return vjp(x, weight_shape, v, **hyper)
    if leg in ("spatial", "tiles"):  # units (sample, tile of rows): the same draw, masked
        geometry = estimators._geometry(case.kernel_size, case.stride, case.padding, case.dilation, case.groups)
        layout = geometry.layout(tuple(x.shape), tuple(v.shape), weight_shape, keep, v.element_size(), mode)
        draw = sampling.sample(v.shape[0] * layout.tiles, keep, mode, generator)
        per_unit = torch.zeros(layout.tiles * v.shape[0], dtype=v.dtype, device=v.device)
        if draw is not None:
            per_unit[draw.index(v.device)] = draw.scale
        rows = torch.tensor(layout.row_tiles(), device=v.device)
        mask = per_unit.view(layout.tiles, v.shape[0])[rows].t()  # [N, O_1]
        mask = mask.reshape(v.shape[0], 1, v.shape[2], *([1] * (v.dim() - 3)))
        return vjp(x, weight_shape, v * mask, **hyper)
    if leg == "positions":
        dims, shape = list(range(2, v.dim())), [1, 1, *v.shape[2:]]
    elif leg == "batch":
        dims, shape = [0], [v.shape[0]] + [1] * (v.dim() - 1)
    else:
        d = 1 + int(leg.split(":")[1])
        dims, shape = [d], [1] * v.dim()
        shape[d] = v.shape[d]
    size = math.prod(v.shape[d] for d in dims)
    draw = sampling.sample(size, keep, mode, generator)
    mask = torch.zeros(size, dtype=v.dtype, device=v.device)
    if draw is not None:
        mask[draw.index(v.device)] = draw.scale
    return vjp(x, weight_shape, v * mask.view(shape), **hyper)


def _plan_flops_fraction(
    case: Case, x: torch.Tensor, v: torch.Tensor, keep: float, leg: str, mode: str = "fixed"
) -> float:
    """FLOPs of the plan that contracts ``ceil(keep·size)`` kept values, over that of all kept."""
    network = estimators.weight_vjp_network(
        x.shape, v.shape, case.kernel_size, case.stride, case.padding, case.dilation, case.groups
    )
    target = sampling.network_leg(leg)
    if target == sampling.TILES:
        geometry = estimators._geometry(case.kernel_size, case.stride, case.padding, case.dilation, case.groups)
        shapes = (tuple(x.shape), tuple(v.shape), network.output_shape, geometry)
        return tiles.tile_plan(*shapes, keep, mode=mode).flops / tiles.tile_plan(*shapes, 1.0).flops
    if leg.startswith("spatial:"):  # rows of one dimension: the kernel's work is kept/size of it
        size = network.size(target)  # type: ignore[arg-type]
        return sampling.fixed_count(size, keep) / size
    if target is None:
        network, target = rewrites.windows_network(network), sampling.JOINT
    size = network.size(target)

    def flops(count: int) -> int:
        draw = sampling.Draw(tuple(range(count)), 1.0)
        return dense_plan(rewrites.sliced_network(network, target, draw).simplify()).flops

    return flops(sampling.fixed_count(size, keep)) / flops(size)


#: ``--clock``: ``"wall"`` (``time.perf_counter``, docs/reference.md §7) or ``"cpu"`` (the
#: calling thread's CPU time, ``time.thread_time``, with one torch thread: robust when other
#: jobs share the machine, since time spent waiting for a core is not counted).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = time.perf_counter


#: The bench re-measures a case when the machine was noisy: when the per-round ratios
#: ``masked/exact`` (two calls whose work does not depend on the draw) spread more than this
#: (half their interquartile range over their median): as many rounds again, at most
#: :data:`MAX_EXTENSIONS` times. (``randomized/exact`` spreads by itself in Bernoulli mode,
#: whose kept count varies from draw to draw.)
NOISE = 0.05
MAX_EXTENSIONS = 2
#: At least this many seconds of calls of the fastest implementation whose work does not
#: depend on the draw (the exact VJP or masking) are timed per case and ``keep`` (more rounds
#: than ``repeats`` for small layers), in at most :data:`MAX_ROUNDS` rounds.
MIN_SECONDS = 0.2
MAX_ROUNDS = 200
#: In Bernoulli mode the randomized estimator is called at least this many times per case
#: and ``keep`` (several calls per round when there are fewer rounds, a round recording
#: their mean): its cost varies with the kept count, and a handful of draws of a layer with
#: few units (``N = 1``, mostly empty draws at low keep) would say what those draws cost,
#: not what a draw costs on average.
MIN_DRAWS = 30


def paired_ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """The per-round ratios ``times[numerator][r] / times[denominator][r]`` (the two calls of
    one round ran next to each other, so a slow phase of a shared machine affects both).

    >>> paired_ratios({"a": [2.0, 3.0], "b": [1.0, 2.0]}, "a", "b")
    [2.0, 1.5]
    """
    return [a / b for a, b in zip(times[numerator], times[denominator])]


def spread(ratios: Sequence[float]) -> float:
    """Half the interquartile range of ``ratios`` over their median (0 for a single ratio;
    infinite for a zero median and a non-zero range: calls that took no measurable time).

    >>> spread([1.0, 1.0, 1.0]), round(spread([0.9, 1.0, 1.1, 1.2, 1.0]), 3), spread([0.0, 0.0, 0.0, 1.0])
    (0.0, 0.05, inf)
    """
    if len(ratios) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    if median == 0:
        return 0.0 if q3 == q1 else math.inf
    return (q3 - q1) / (2 * median)


def _timed(
    thunks: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    noisy: Callable[[dict], bool],
    steady: Sequence[str] | None = None,
    draws: Mapping[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every implementation: a warm-up, then rounds that call each once,
    in an order that rotates from round to round (none always runs right after another).
    ``repeats`` rounds, or as many as take :data:`MIN_SECONDS` of the fastest of the
    ``steady`` implementations (default: all) by its warm-up, at most :data:`MAX_ROUNDS`
    (small layers are cheap to time often and noisy to time rarely); then as many more
    while ``noisy(times)``, at most :data:`MAX_EXTENSIONS` times.

    ``steady`` names the implementations whose work does not depend on a random draw: the
    round count must not be sized on one call of a randomized estimator in Bernoulli mode,
    whose kept count varies from call to call — one lucky draw that keeps (almost) nothing
    takes microseconds and would buy :data:`MAX_ROUNDS` rounds of the exact VJP. (Measured:
    ``vgg16/features.2``, ``N = 1``, at keep 0.1, 200 rounds and 29 s for one row instead of
    5 rounds; it is why the Bernoulli ``--full`` run did not finish.)

    ``draws`` gives implementations (those whose time depends on the draw) a minimum number
    of calls over the rounds: each round calls such an implementation ``ceil(draws / rounds)``
    times, next to each other, and records their mean."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def call(name: str) -> float:
        sync()
        start = _clock()
        thunks[name]()
        sync()
        return _clock() - start

    names = list(thunks)
    sizing = list(steady) if steady is not None else names
    if not sizing or any(name not in thunks for name in sizing):
        raise ValueError(f"steady must name some of the implementations {names}, got {steady}")
    if draws is not None and any(name not in thunks or count < 1 for name, count in draws.items()):
        raise ValueError(f"draws must map some of the implementations {names} to positive counts, got {draws}")
    for name in names:  # warm-up (first calls build caches and primitives)
        call(name)
    fastest = min(call(name) for name in sizing)  # an estimate, from calls that do not draw
    rounds = max(repeats, min(MAX_ROUNDS, math.ceil(MIN_SECONDS / max(fastest, 1e-9))))
    calls = {name: math.ceil((draws or {}).get(name, 1) / rounds) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for extension in range(MAX_EXTENSIONS + 1):
        if extension and not noisy(times):
            break
        for _ in range(rounds):
            shift = len(times[names[0]]) % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(statistics.fmean(call(name) for _ in range(calls[name])))
    return times


def measure(
    case: Case,
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
    one_draw = estimators.conv_weight_vjp(x, v, case.kernel_size, **hyper, **options)
    error = float((one_draw - exact).norm() / exact.norm())
    rounds = _timed(
        {
            "randomized": lambda: estimators.conv_weight_vjp(x, v, case.kernel_size, **hyper, **options),
            "exact": lambda: _masked_vjp(case, x, v, 1.0, leg, mode, gen),
            "masked": lambda: _masked_vjp(case, x, v, keep, leg, mode, gen),
        },
        repeats,
        device,
        lambda times: spread(paired_ratios(times, "masked", "exact")) > NOISE,
        steady=("exact", "masked"),  # their work does not depend on the draw
        draws={"randomized": MIN_DRAWS} if mode == "bernoulli" and keep < 1 else None,  # keep 1 keeps all
    )
    times = {name: statistics.median(values) for name, values in rounds.items()}
    vs_exact = paired_ratios(rounds, "randomized", "exact")
    return {
        "case": case.label,
        "batch": batch,
        "keep": keep,
        "leg": leg,
        "mode": mode,
        **{f"{name}_s": seconds for name, seconds in times.items()},
        "rounds": len(vs_exact),
        "spread": spread(vs_exact),
        "vs_exact": statistics.median(vs_exact),
        "vs_exact_mean": statistics.fmean(vs_exact),
        "vs_masked": statistics.median(paired_ratios(rounds, "randomized", "masked")),
        "masked_vs_exact": statistics.median(paired_ratios(rounds, "masked", "exact")),
        "flops_fraction": _plan_flops_fraction(case, x, v, keep, leg, mode),
        "relative_error": error,
        "equal_time_error": error * math.sqrt(statistics.median(vs_exact)),
    }


def run(
    cases: Iterable[Case],
    keeps: Sequence[float] = KEEPS,
    legs: Sequence[str] = ("spatial",),
    progress: Callable[[dict[str, object]], None] | None = None,
    **options: object,
) -> list[dict[str, object]]:
    """:func:`measure` every non-transposed case with ``D ≤ 3`` at every ``keep``, per leg
    (``progress(row)`` after each row)."""
    rows = []
    for case in cases:
        if not applies(case):
            continue
        for leg in legs:
            if leg.startswith("spatial:") and int(leg.split(":")[1]) > case.dims:
                continue  # (a 1-d layer has no second dimension to sample)
            for keep in keeps:
                rows.append(measure(case, keep, leg=leg, **options))  # type: ignore[arg-type]
                if progress is not None:
                    progress(rows[-1])
    return rows


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """A plain-text table of :func:`run`'s rows and the median ratios per ``keep``."""
    header = (
        f"{'case':<34} {'leg':<10} {'N':>3} {'keep':>5} {'rand ms':>9} {'exact ms':>9} {'mask ms':>9} "
        f"{'/exact':>7} {'mean':>6} {'spread':>6} {'rnds':>4} {'/mask':>7} {'FLOPs':>6} {'rel.err':>8} {'eq.time':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['case']:<34} {row['leg']:<10} {row['batch']:>3} {row['keep']:>5.2f} "
            f"{1e3 * row['randomized_s']:>9.2f} "  # type: ignore[operator]
            f"{1e3 * row['exact_s']:>9.2f} {1e3 * row['masked_s']:>9.2f} {row['vs_exact']:>7.2f} "  # type: ignore[operator]
            f"{row['vs_exact_mean']:>6.2f} {row['spread']:>6.3f} {row['rounds']:>4} "
            f"{row['vs_masked']:>7.2f} {row['flops_fraction']:>6.3f} {row['relative_error']:>8.3f} "
            f"{row['equal_time_error']:>8.3f}"
        )
    lines.append("")
    lines.append(
        "median over cases:  leg        keep   rand/exact (max)   mean (max)   rand/masked   FLOPs   rel. error"
        "   at equal time"
    )
    for leg in dict.fromkeys(row["leg"] for row in rows):
        for keep in sorted({row["keep"] for row in rows if row["leg"] == leg}, reverse=True):  # type: ignore[type-var]
            some = [row for row in rows if row["keep"] == keep and row["leg"] == leg]

            def median(key: str, some: list = some) -> float:
                return statistics.median(float(row[key]) for row in some)

            worst = max(float(row["vs_exact"]) for row in some)
            worst_mean = max(float(row["vs_exact_mean"]) for row in some)
            lines.append(
                f"{'':<20}{leg:<10} {keep:>5.2f} {median('vs_exact'):>10.2f} ({worst:>4.2f}) "
                f"{median('vs_exact_mean'):>6.2f} ({worst_mean:>4.2f}) "
                f"{median('vs_masked'):>13.2f} {median('flops_fraction'):>7.3f} {median('relative_error'):>12.3f} "
                f"{median('equal_time_error'):>15.3f}"
            )
    controls = [float(row["masked_vs_exact"]) for row in rows if row["keep"] == 1.0]
    if controls:
        lines.append(
            f"noise floor: the exact VJP against itself (masked at keep 1): median {statistics.median(controls):.2f}, "
            f"range {min(controls):.2f}-{max(controls):.2f} over {len(controls)} cases"
        )
    return "\n".join(lines)


# --- hook for the ``tnconv bench`` registry -----------------------------------------------------------


TORCH_INPUT_VJP = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


def registry_setup(keep: float, leg: str = "spatial", mode: str = "fixed", kind: str = "weight"):  # type: ignore[no-untyped-def]
    """A ``setup(case, batch, dtype, device)`` for :class:`tnconv.bench.operations.Operation`:
    ``"tnconv"`` is the randomized weight (or input, ``kind="input"``) VJP at ``keep``,
    ``"torch"`` the exact one. The runner's relative error of ``tnconv`` against ``torch``
    is then the error of one draw.
    """

    def setup(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Callable[[], object]]:
        x = torch.randn((batch, *case.input_shape[1:]), dtype=dtype, device=device)
        v = torch.randn((batch, case.out_channels, *case.output_spatial_size()), dtype=dtype, device=device)
        hyper = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
        generator = torch.Generator().manual_seed(0)
        if kind == "input":
            w = torch.randn(case.weight_shape(), dtype=dtype, device=device)
            return {
                "tnconv": lambda: estimators.conv_input_vjp(
                    w, v, x.shape, **hyper, keep=keep, leg=leg, mode=mode, generator=generator
                ),
                "torch": lambda: TORCH_INPUT_VJP[case.dims](x.shape, w, v, **hyper),
            }
        return {
            "tnconv": lambda: estimators.conv_weight_vjp(
                x, v, case.kernel_size, **hyper, keep=keep, leg=leg, mode=mode, generator=generator
            ),
            "torch": lambda: TORCH_WEIGHT_VJP[case.dims](x, case.weight_shape(), v, **hyper),
        }

    return setup


#: The registered estimator families: name → (kind, leg, description).
FAMILIES = {
    "randomized_weight_vjp": ("weight", "spatial", "randomized weight VJP, tiles of output rows"),
    "randomized_weight_vjp_positions": ("weight", "positions", "randomized weight VJP, single output positions"),
    "randomized_weight_vjp_batch": ("weight", "batch", "randomized weight VJP, samples"),
    "randomized_input_vjp": ("input", "spatial", "randomized input VJP, tiles of output rows"),
}


def register_operations(keeps: Sequence[float] = KEEPS) -> list[str]:
    """Register ``randomized_weight_vjp@KEEP`` in the ``tnconv bench`` registry: opt-in
    operations (``--ops randomized_weight_vjp`` runs every keep), outside the default run.
    Returns the names.

    >>> from tnconv.bench.operations import OPERATIONS
    >>> OPERATIONS["randomized_weight_vjp@0.5"].applies(bundled_cases()[0])
    True
    """
    from .operations import Operation, register

    names = []
    for family, (kind, leg, text) in FAMILIES.items():
        for keep in keeps:
            name = f"{family}@{keep:g}"
            description = f"{text}, keep {keep:g} (docs/randomized.md)"
            setup = registry_setup(keep, leg, kind=kind)
            function = f"randomized.conv_{kind}_vjp"
            register(Operation(name, description, function, applies, setup, False, True, f"{kind}_vjp"))
            names.append(name)
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tnconv bench-randomized`` (also ``python -m tnconv.bench.randomized``)."""
    parser.add_argument("--cases", default=None, help="your own cases file (default: the bundled layers)")
    parser.add_argument("--only", default=None, help="comma-separated models or model/layer labels (default: a few)")
    parser.add_argument("--full", action="store_true", help="every plain layer of the cases")
    parser.add_argument("--keeps", default=",".join(map(str, KEEPS)), help="comma-separated kept fractions")
    parser.add_argument(
        "--legs", "--leg", default="spatial", help="comma-separated: spatial (tiles), positions, spatial:d, batch"
    )
    parser.add_argument("--mode", default="fixed", choices=sampling.MODES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override docs/reference.md §7's batch-size rule")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock", default="wall", choices=tuple(CLOCKS), help="wall time, or CPU time of one thread (shared machines)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe and print its table; bad option values
    raise ``ValueError`` naming the option."""
    global _clock
    keeps = tuple(sampling.check_keep(float(k), "--keeps") for k in args.keeps.split(","))
    legs = tuple(sampling.check_leg(leg, "weight", 3, "--legs") for leg in args.legs.split(","))
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    _clock = CLOCKS[args.clock]
    if args.clock == "cpu":
        torch.set_num_threads(1)
    cases = [case for case in (load_cases(args.cases) if args.cases else bundled_cases()) if applies(case)]
    if not args.full:
        wanted = args.only.split(",") if args.only else (None if args.cases else list(DEFAULT_LAYERS))
        if wanted is not None:
            cases = [case for case in cases if case.model in wanted or case.label in wanted]
    begin = time.perf_counter()

    def progress(row: dict[str, object]) -> None:  # one line per row on stderr (the table comes at the end)
        print(
            f"[{time.perf_counter() - begin:7.1f} s] {row['case']} {row['leg']} keep {row['keep']}: "
            f"/exact {row['vs_exact']:.2f}, {row['rounds']} rounds",
            file=sys.stderr,
            flush=True,
        )

    rows = run(cases, keeps, legs, progress, mode=args.mode, repeats=args.repeats, batch=args.batch, device=args.device)
    print(format_table(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tnconv.bench.randomized",
        description="Time randomized weight VJPs against the exact VJP and against masking (docs/reference.md §6, §7).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
