"""Running the benchmark: every (case, operation) pair, timed per docs/reference.md §7, in this process."""

from __future__ import annotations

import gc
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .cases import Case, batch_size
from .operations import BASELINES, Operation, is_floor
from .progress import Progress, SilentProgress
from .stats import RatioStats, summarize
from .timing import time_alternating


@dataclass(frozen=True)
class BenchConfig:
    """How to measure.

    Attributes:
        dtype, device: of the random inputs.
        reps: timed rounds (docs/reference.md §7: at least 5); the median is reported.
        warmup: untimed rounds before them (at least 1; its results are checked for agreement).
        batch: a fixed batch size, or ``None`` for docs/reference.md §7's rule (see :func:`~.cases.batch_size`).
        baselines: the baselines to compare with (those that apply to a case are run).
        seed: seed of the random inputs.
        max_spread: a (case, operation) whose relative interquartile range (:func:`spread`)
            exceeds this is timed again, up to ``remeasure`` times; the steadier timing is kept.
        floors: also time the operations' floors (docs/reference.md §7).
        clock: ``"wall"`` (default) or ``"cpu"`` (process CPU time, for loaded machines;
            CPU device only, see :mod:`.timing`).
    """

    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    reps: int = 5
    warmup: int = 1
    batch: int | None = None
    baselines: tuple[str, ...] = BASELINES
    seed: int = 0
    max_spread: float = 0.25
    remeasure: int = 2
    floors: bool = True
    clock: str = "wall"

    def batch_for(self, case: Case) -> int:
        return self.batch if self.batch is not None else batch_size(case)


@dataclass
class Measurement:
    """Timings of one operation on one case.

    Attributes:
        seconds: per implementation (``"tnconv"`` and baselines), the timed runs.
        rel_error: per baseline, ``‖tnconv − baseline‖ / ‖baseline‖`` of the warm-up results.
        failures: implementations that raised, with the message.
    """

    case: str
    operation: str
    batch: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rel_error: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    remeasured: int = 0

    def median(self, implementation: str) -> float | None:
        runs = sorted(self.seconds.get(implementation, []))
        if not runs:
            return None
        middle = len(runs) // 2
        return runs[middle] if len(runs) % 2 else (runs[middle - 1] + runs[middle]) / 2

    def ratios(self) -> dict[str, float]:
        """``median(tnconv) / median(baseline)`` for every baseline that ran."""
        mine = self.median("tnconv")
        out: dict[str, float] = {}
        for name in self.seconds:
            theirs = self.median(name)
            if name != "tnconv" and mine is not None and theirs:
                out[name] = mine / theirs
        return out

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "operation": self.operation,
            "batch": self.batch,
            "median_seconds": {name: self.median(name) for name in self.seconds},
            "ratios": self.ratios(),
            "rel_error": {name: (e if math.isfinite(e) else None) for name, e in self.rel_error.items()},
            "failures": self.failures,
            "remeasured": self.remeasured,
            "seconds": self.seconds,
        }


@dataclass
class BenchResult:
    """Everything one run measured, plus notes on what was skipped."""

    cases: list[Case]
    operations: list[str]
    config: BenchConfig
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, RatioStats]]:
        """``{operation: {baseline: RatioStats}}`` over the cases."""
        return summarize(
            (m.operation, baseline, m.case, ratio) for m in self.measurements for baseline, ratio in m.ratios().items()
        )


def plan_units(
    cases: Sequence[Case], operations: Sequence[Operation], notes: list[str]
) -> list[tuple[Case, Operation]]:
    """The (case, operation) pairs to run; unavailable operations are noted and left out."""
    available = []
    for operation in operations:
        if operation.available():
            available.append(operation)
        else:
            notes.append(f"{operation.name}: skipped, tnconv.{operation.function} is not available in this version")
    units = [(case, op) for case in cases for op in available if op.applies(case)]
    for operation in available:
        if not any(op is operation for _, op in units):
            notes.append(f"{operation.name}: no selected case to run it on")
    return units


def _rel_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    if result.shape != reference.shape:
        return float("inf")
    difference = (result.double() - reference.double()).norm()
    return float(difference / reference.double().norm().clamp_min(1e-300))


def measure(case: Case, operation: Operation, config: BenchConfig) -> Measurement | None:
    """Time one operation on one case (``None`` if no baseline applies to it)."""
    batch = config.batch_for(case)
    measurement = Measurement(case.label, operation.name, batch)
    torch.manual_seed(config.seed)
    functions = operation.setup(case, batch, config.dtype, config.device)
    if operation.floors is not None and config.floors:
        functions.update(operation.floors(case, batch, config.dtype, config.device))
    functions = {
        name: f for name, f in functions.items() if name == "tnconv" or name in config.baselines or is_floor(name)
    }
    if "tnconv" not in functions or len([n for n in functions if not is_floor(n)]) < 2:
        return None
    outputs: dict[str, torch.Tensor] = {}
    for name, function in list(functions.items()):
        try:
            outputs[name] = function()
        except Exception as error:  # noqa: BLE001 - a failing implementation is reported, not fatal
            measurement.failures[name] = f"{type(error).__name__}: {error}"
            del functions[name]
    if "tnconv" in outputs:
        for name, output in outputs.items():
            if name != "tnconv" and not is_floor(name):
                if operation.canonical is not None:
                    output = operation.canonical(case, output)
                measurement.rel_error[name] = _rel_error(outputs["tnconv"], output)
    outputs.clear()
    if "tnconv" in functions and len(functions) >= 2:
        measurement.seconds = time_alternating(
            functions, config.reps, max(0, config.warmup - 1), config.device, config.clock
        )
        for _ in range(config.remeasure):
            if spread(measurement.seconds) <= config.max_spread:
                break
            # a noisy case (a loaded machine): measure it again, keep the steadier measurement
            again = time_alternating(functions, config.reps, 0, config.device, config.clock)
            if spread(again) < spread(measurement.seconds):
                measurement.seconds = again
            measurement.remeasured += 1
    return measurement


def spread(seconds: dict[str, list[float]]) -> float:
    """The largest relative interquartile range ``IQR / median`` over the implementations.

    >>> spread({"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0, 4.0]})   # (3.25 - 1.75) / 2.5
    0.6
    """
    worst = 0.0
    for runs in seconds.values():
        if len(runs) < 2:
            continue
        q1, median, q3 = statistics.quantiles(runs, n=4, method="inclusive")
        worst = max(worst, (q3 - q1) / median if median > 0 else 0.0)
    return worst


def run_benchmark(
    cases: Sequence[Case],
    operations: Sequence[Operation],
    config: BenchConfig,
    progress: Progress | None = None,
) -> BenchResult:
    """Measure every applicable (case, operation) pair.

    >>> from tnconv.bench.cases import Case
    >>> from tnconv.bench.operations import OPERATIONS
    >>> case = Case("net", "layer", (1, 2, 6, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1))
    >>> result = run_benchmark([case], [OPERATIONS["fwd"]], BenchConfig(reps=2, batch=2, baselines=("torch",)))
    >>> [(m.case, m.operation, sorted(m.ratios())) for m in result.measurements]
    [('net/layer', 'fwd', ['torch'])]
    """
    progress = progress or SilentProgress()
    result = BenchResult(list(cases), [op.name for op in operations], config)
    units = plan_units(cases, operations, result.notes)
    case_index = {case.label: i for i, case in enumerate(dict.fromkeys(case for case, _ in units))}
    progress.start(len(units), len(case_index))
    with torch.no_grad():
        for index, (case, operation) in enumerate(units):
            progress.step(index, case_index[case.label], case.label, operation.name)
            measurement = measure(case, operation, config)
            if measurement is None:
                continue
            for name, message in measurement.failures.items():
                result.notes.append(f"{operation.name} on {case.label}: {name} failed ({message})")
            for name, error in measurement.rel_error.items():
                if not operation.estimator and not error < _tolerance(config.dtype):
                    result.notes.append(
                        f"{operation.name} on {case.label}: tnconv and {name} disagree (relative error {error:.2e})"
                    )
            result.measurements.append(measurement)
            gc.collect()
    progress.close()
    return result


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 1e-3}.get(dtype, 5e-2)
