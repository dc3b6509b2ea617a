"""Turning a :class:`~.runner.BenchResult` into tables and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .operations import einconv_module
from .runner import BenchResult
from .stats import summarize


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(row) for row in rows])


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def summary_table(result: BenchResult) -> str:
    """Per operation and baseline: cases, median, min and max of tnconv/baseline, worst case.

    A ratio below 1 means tnconv is faster than the baseline.
    """
    rows = []
    for operation, by_baseline in result.summary().items():
        for position, (baseline, stats) in enumerate(by_baseline.items()):
            rows.append(
                [
                    operation if position == 0 else "",
                    baseline,
                    str(stats.count),
                    _ratio(stats.median),
                    f"{stats.q1:.2f}-{stats.q3:.2f}",
                    _ratio(stats.minimum),
                    _ratio(stats.maximum),
                    stats.worst_case,
                ]
            )
    if not rows:
        return "no measurements"
    header = ["operation", "baseline", "cases", "median", "IQR", "min", "max", "worst case (max)"]
    return _table(header, rows, [False, False, True, True, True, True, True, False])


def per_case_table(result: BenchResult) -> str:
    """One row per (case, operation): batch, median times (ms) and ratios per baseline."""
    baselines = list(dict.fromkeys(name for m in result.measurements for name in m.seconds if name != "tnconv"))
    header = ["case", "operation", "batch", "tnconv ms"]
    for name in baselines:
        header += [f"{name} ms", f"vs {name}"]
    rows = []
    for m in result.measurements:
        ratios = m.ratios()
        mine = m.median("tnconv")
        row = [m.case, m.operation, str(m.batch), "-" if mine is None else f"{mine * 1e3:.3f}"]
        for name in baselines:
            theirs = m.median(name)
            row += ["-" if theirs is None else f"{theirs * 1e3:.3f}", _ratio(ratios.get(name))]
        rows.append(row)
    if not rows:
        return "no measurements"
    return _table(header, rows, [False, False] + [True] * (len(header) - 2))


def memory_rows(result: BenchResult) -> list[tuple[str, str, str, float]]:
    """``(operation, baseline, case, tnconv bytes / baseline bytes)`` of the memory measurements."""
    rows = []
    for entry in result.memory:
        for operation, sizes in entry["bytes"].items():
            mine = sizes.get("tnconv")
            for name, theirs in sizes.items():
                if name != "tnconv" and isinstance(mine, int) and isinstance(theirs, int) and mine > 0 and theirs > 0:
                    rows.append((operation, name, entry["case"], mine / theirs))
    return rows


def memory_table(result: BenchResult) -> str:
    """Peak extra memory (MiB) per case and implementation, and the ratio summary."""
    implementations = list(
        dict.fromkeys(name for entry in result.memory for sizes in entry["bytes"].values() for name in sizes)
    )
    rows = []
    for entry in result.memory:
        for operation, sizes in entry["bytes"].items():
            row = [entry["case"], operation, str(entry["batch"])]
            for name in implementations:
                value = sizes.get(name)
                row.append(f"{value / 2**20:.1f}" if isinstance(value, int) else "-" if value is None else "error")
            rows.append(row)
    if not rows:
        return "no memory measurements"
    header = ["case", "operation", "batch"] + [f"{name} MiB" for name in implementations]
    text = _table(header, rows, [False, False] + [True] * (len(header) - 2))
    summary_rows = [
        [operation, baseline, str(s.count), _ratio(s.median), _ratio(s.minimum), _ratio(s.maximum), s.worst_case]
        for operation, by_baseline in summarize(memory_rows(result)).items()
        for baseline, s in by_baseline.items()
    ]
    if summary_rows:
        header = ["operation", "baseline", "cases", "median", "min", "max", "worst case (max)"]
        text += "\n\nPeak extra memory, tnconv / baseline:\n"
        text += _table(header, summary_rows, [False, False, True, True, True, True, False])
    return text


def metadata(result: BenchResult, argv: Sequence[str] | None = None) -> dict:
    import tnconv

    einconv = einconv_module()
    config = result.config
    return {
        "tnconv": tnconv.__version__,
        "torch": torch.__version__,
        "einconv": getattr(einconv, "__version__", "installed") if einconv is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(config.device),
        "device_name": torch.cuda.get_device_name(config.device)
        if config.device.type == "cuda"
        else platform.processor(),
        "dtype": str(config.dtype).removeprefix("torch."),
        "reps": config.reps,
        "warmup": config.warmup,
        "batch_size": config.batch if config.batch is not None else "rule: clamp(2**21 // (C_in * prod(I)), 1, 64)",
        "baselines": list(config.baselines),
        "command": list(argv) if argv is not None else sys.argv,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def results_json(result: BenchResult, argv: Sequence[str] | None = None) -> dict:
    """Everything as one JSON-serialisable dictionary."""
    return {
        "meta": metadata(result, argv),
        "operations": result.operations,
        "cases": [case.to_json() for case in result.cases],
        "summary": {
            op: {base: stats.to_json() for base, stats in by_base.items()} for op, by_base in result.summary().items()
        },
        "measurements": [m.to_json() for m in result.measurements],
        "memory": result.memory,
        "memory_summary": {
            op: {base: stats.to_json() for base, stats in by_base.items()}
            for op, by_base in summarize(memory_rows(result)).items()
        },
        "notes": result.notes,
    }


def write_json(result: BenchResult, path: Path, argv: Sequence[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_json(result, argv), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
