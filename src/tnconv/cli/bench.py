"""``tnconv bench``: tnconv against PyTorch (and einconv) on the convolutions of real networks.

Times each operation per docs/reference.md §7 (median of ``--reps`` runs after a warm-up, implementations
alternating, one process) and reports the ratio tnconv / baseline: a table per operation
(median, min, max, worst case), optionally one row per case, ``results.json``,
``summary.txt`` and a plot ``ratios.png``/``.svg`` in ``--out``. ``--memory`` adds the peak
extra memory of the KFC and KFAC-reduce factors against the unfold baseline, measured in a
fresh process per case (see :mod:`tnconv.bench.memory`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HELP = "benchmark tnconv against PyTorch (and einconv) on convolutions of real networks"

DESCRIPTION = (
    "Benchmark tnconv against PyTorch (and einconv, if installed) on the convolutions of real networks. "
    "Each operation is timed as the median of --reps runs after a warm-up, implementations alternating; "
    "the report gives the ratio tnconv / baseline per operation (median, min, max, worst case) and writes "
    "results.json, summary.txt and ratios.png/.svg to --out."
)

DTYPES = ("float32", "float64", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.operations import OPERATIONS

    parser.description = DESCRIPTION
    parser.add_argument("--nets", metavar="A,B", help="networks to run (default: all; see --list)")
    parser.add_argument("--ops", metavar="A,B", help=f"operations to time (default: all of {','.join(OPERATIONS)})")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="data type (default: float32)")
    parser.add_argument("--reps", type=int, default=5, metavar="N", help="timed runs per implementation (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs first (default: 1)")
    parser.add_argument(
        "--batch-size",
        default="auto",
        metavar="auto|N",
        help="'auto': clamp(2**21 // (C_in*prod(I)), 1, 64) per case (docs/reference.md §7), or a fixed N",
    )
    parser.add_argument("--cases", metavar="FILE", type=Path, help="JSON-lines file of your own layers (see README)")
    parser.add_argument("--full", action="store_true", help="every bundled case (default: a representative subset)")
    parser.add_argument("--per-case", action="store_true", help="also print one row per case and operation")
    parser.add_argument(
        "--out", metavar="DIR", type=Path, default=Path("bench-results"), help="output folder (default: bench-results/)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak extra memory of kfc/kfac_reduce (a process per case)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: cpu)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time (all threads), steadier on a loaded "
        "machine -- best with OMP_NUM_THREADS=1",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw ratios.png/.svg")
    parser.add_argument("--no-einconv", action="store_true", help="do not use einconv as a second baseline")
    parser.add_argument("--list", action="store_true", help="list the networks and cases that would run, then exit")


def _positive(value: int, option: str, minimum: int = 1) -> int:
    if value < minimum:
        raise ValueError(f"{option} must be at least {minimum}, got {value}")
    return value


def _batch(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--batch-size must be 'auto' or a positive int, got {text!r}") from None
    return _positive(value, "--batch-size")


def _select(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..bench.cases import DEFAULT_SUBSET, bundled_cases, load_cases, select_cases

    nets = [net.strip() for net in args.nets.split(",") if net.strip()] if args.nets else None
    if args.cases is not None:
        return select_cases(load_cases(args.cases), nets)
    return select_cases(bundled_cases(), nets, None if args.full else DEFAULT_SUBSET)


def run(args: argparse.Namespace) -> int:
    from ..bench.cases import networks
    from ..bench.operations import BASELINES, einconv_module, parse_ops
    from ..bench.runner import BenchConfig, run_benchmark

    operations = parse_ops(args.ops)
    cases = _select(args)
    if args.list:
        for net in networks(cases):
            print(f"{net}: {', '.join(case.name for case in cases if case.model == net)}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    device = torch.device(args.device)
    baselines = tuple(b for b in BASELINES if not (b == "einconv" and (args.no_einconv or einconv_module() is None)))
    config = BenchConfig(
        dtype=getattr(torch, args.dtype),
        device=device,
        reps=_positive(args.reps, "--reps"),
        warmup=_positive(args.warmup, "--warmup"),
        batch=_batch(args.batch_size),
        baselines=baselines,
        clock=args.clock,
    )
    if args.clock == "cpu" and device.type == "cuda":
        raise ValueError("--clock cpu: CPU time does not measure CUDA kernels; use --clock wall with --device cuda")
    _check_out(args.out)
    _check_memory(cases, config)
    from ..bench.progress import make_progress

    begin = time.perf_counter()
    print(
        f"tnconv bench: {len(cases)} layers of {len(networks(cases))} networks, "
        f"ops {','.join(op.name for op in operations)}; "
        f"{args.dtype} on {device} ({torch.get_num_threads()} threads), batch "
        f"{'by the rule of docs/reference.md §7' if config.batch is None else config.batch}, "
        f"median of {config.reps} runs ({args.clock} clock); "
        f"baselines: {', '.join(baselines)}",
        flush=True,
    )
    result = run_benchmark(cases, operations, config, make_progress())
    if args.memory:
        _measure_memory(result, operations)
    return _report(result, args, time.perf_counter() - begin)


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot take the results *before* the benchmark runs."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file, not a folder")
    for name in ("results.json", "summary.txt"):
        if (out / name).is_dir():
            raise ValueError(f"--out {str(out)!r} is occupied: {name} in it is a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tnconv-write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--out {str(out)!r} is not writable: {error.strerror or error}") from None


def _check_memory(cases, config) -> None:  # type: ignore[no-untyped-def]
    """Refuse, up front and with the estimate, a case that needs more memory than the machine has."""
    from ..bench.memory import available_bytes, estimate_case_bytes

    free = available_bytes(config.device)
    if free is None:
        return
    for case in cases:
        batch = config.batch_for(case)
        needed = estimate_case_bytes(case, batch, config.dtype)
        if needed > free:
            raise ValueError(
                f"case {case.label} at batch {batch} needs at least {needed / 2**30:.1f} GiB (input, weight, "
                f"output and unfolded input in {str(config.dtype).removeprefix('torch.')}) but "
                f"{free / 2**30:.1f} GiB are available on {config.device}; use a smaller --batch-size "
                "or leave the case out"
            )


def _measure_memory(result, operations) -> None:  # type: ignore[no-untyped-def]
    from ..bench.memory import MEMORY_OPERATIONS, measure_memory
    from ..bench.progress import make_progress

    wanted = tuple(op.name for op in operations if op.name in MEMORY_OPERATIONS and op.available())
    if not wanted:
        result.notes.append("--memory: none of kfc, kfac_reduce is selected and available; nothing measured")
        return
    by_name = {op.name: op for op in operations}
    cases = [case for case in result.cases if any(by_name[name].applies(case) for name in wanted)]
    config = result.config
    progress = make_progress()
    progress.start(len(cases), len(cases))
    for index, case in enumerate(cases):
        progress.step(index, index, case.label, "memory")
        batch = config.batch_for(case)
        sizes = measure_memory(case, batch, config.dtype, config.device, ("tnconv",) + config.baselines, wanted)
        result.memory.append({"case": case.label, "batch": batch, "bytes": sizes})
        for operation, by_impl in sizes.items():
            for implementation, value in by_impl.items():
                if isinstance(value, str):
                    result.notes.append(f"memory of {operation} on {case.label}, {implementation}: {value}")
    progress.close()


def _report(result, args: argparse.Namespace, seconds: float) -> int:  # type: ignore[no-untyped-def]
    from ..bench.report import memory_rows, memory_table, per_case_table, summary_table, write_json

    sections = [
        "Run time ratio tnconv / baseline (below 1: tnconv is faster), over cases:",
        summary_table(result),
    ]
    if args.per_case:
        sections += ["Per case (median times):", per_case_table(result)]
    if args.memory:
        sections += ["Peak extra memory (separate process per case):", memory_table(result)]
    out: Path = args.out
    json_path = write_json(result, out / "results.json", ["tnconv", "bench", *sys.argv[2:]])
    files = [json_path]
    if not args.no_plot:
        try:
            from ..bench.plot import plot_ratios

            title = f"tnconv vs baselines, {args.dtype} on {result.config.device}"
            rows = [
                (m.operation, baseline, m.case, ratio)
                for m in result.measurements
                for baseline, ratio in m.ratios().items()
            ]
            files += plot_ratios(rows, out, title)
            if result.memory:
                files += plot_ratios(
                    memory_rows(result), out, "peak extra memory", "memory", "tnconv memory / baseline memory (log)"
                )
        except ImportError:
            result.notes.append("plot skipped: matplotlib is not installed (pip install 'tnconv[plot]')")
    if result.notes:
        sections += ["Notes:", "\n".join(f"- {note}" for note in result.notes)]
    text = "\n\n".join(sections)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    files.append(out / "summary.txt")
    print(text)
    print(f"\nwrote {', '.join(str(f) for f in files)} ({seconds:.0f} s)")
    return 0
