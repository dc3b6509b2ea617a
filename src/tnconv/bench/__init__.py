"""The benchmark of docs/reference.md §7: tnconv against PyTorch (and einconv) on real networks' convolutions.

Run it as ``tnconv bench`` or ``python -m tnconv.bench`` (same options). As a library:

>>> from tnconv.bench import BenchConfig, bundled_cases, parse_ops, run_benchmark, select_cases
>>> cases = select_cases(bundled_cases(), ["cifar10_3c3d"])
>>> [case.name for case in cases]
['0', '3', '6']
>>> result = run_benchmark(cases[1:2], parse_ops("fwd"), BenchConfig(reps=1, batch=1, baselines=("torch",)))
>>> sorted(result.summary()["fwd"])
['torch']
"""

from .cases import Case, CaseFormatError, batch_size, bundled_cases, load_cases, parse_cases, select_cases
from .operations import OPERATIONS, Operation, parse_ops, register
from .randomized import register_operations
from .runner import BenchConfig, BenchResult, Measurement, run_benchmark
from .stats import RatioStats, ratio_stats, summarize

register_operations()  # opt-in: `tnconv bench --ops randomized_weight_vjp`

__all__ = [
    "OPERATIONS",
    "BenchConfig",
    "BenchResult",
    "Case",
    "CaseFormatError",
    "Measurement",
    "Operation",
    "RatioStats",
    "batch_size",
    "bundled_cases",
    "load_cases",
    "parse_cases",
    "parse_ops",
    "ratio_stats",
    "register",
    "run_benchmark",
    "select_cases",
    "summarize",
]
