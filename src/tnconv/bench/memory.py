"""Peak extra memory of an operation, measured in a fresh process per case (``--memory``).

Method. The parent starts ``python -m tnconv.bench.memory`` once per case and sends it the
case, batch size, dtype, device, operations and implementations as JSON on standard input.
The child builds the inputs and then, for each implementation in turn: calls it once
(warm-up: plans, thread pools and caches are allocated here and not counted), frees the
result, resets the peak counter, notes the memory in use, calls it again and reads the peak.
*Peak extra memory* = peak − in use before the call: every temporary plus the result.

- CPU: the peak is the process's resident-set high-water mark ``VmHWM`` of
  ``/proc/self/status``, reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux). The
  child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every large buffer
  with its own ``mmap`` and returns it on ``free``; otherwise memory freed by one
  implementation would be reused by the next without showing in the high-water mark.
  Without ``/proc`` (not Linux) the measurement is reported as unavailable.
- CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` of the caching
  allocator.

A separate process per case keeps the measurement free of what earlier cases left in the
allocator, and keeps the timing process's own memory out of the picture.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from .cases import Case, parse_case
from .operations import OPERATIONS

MEMORY_OPERATIONS = ("kfc", "kfac_reduce")


def _status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise OSError(f"{key} not in /proc/self/status")
    return int(match.group(1)) * 1024


def peak_extra_bytes(function: Callable[[], object], device: torch.device) -> int:
    """Peak memory (bytes) a call of ``function`` needs beyond what is in use before it."""
    result = function()
    del result
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = function()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    result = function()
    peak = _status_bytes("VmHWM")
    del result
    return max(0, peak - before)


def _child() -> None:
    request = json.loads(sys.stdin.read())
    case = parse_case(request["case"], "<memory request>", 0, "custom")
    device = torch.device(request["device"])
    dtype = getattr(torch, request["dtype"])
    report: dict[str, dict[str, int | str]] = {}
    with torch.no_grad():
        for name in request["operations"]:
            torch.manual_seed(0)
            functions = OPERATIONS[name].setup(case, request["batch"], dtype, device)
            report[name] = {}
            for implementation in request["implementations"]:
                if implementation in functions:
                    try:
                        report[name][implementation] = peak_extra_bytes(functions[implementation], device)
                    except Exception as error:  # noqa: BLE001 - reported to the parent
                        report[name][implementation] = f"{type(error).__name__}: {error}"
            del functions
            gc.collect()
    json.dump(report, sys.stdout)


def measure_memory(
    case: Case,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    implementations: tuple[str, ...],
    operations: tuple[str, ...] = MEMORY_OPERATIONS,
    timeout: float = 600.0,
) -> dict[str, dict[str, int | str]]:
    """``{operation: {implementation: peak extra bytes, or an error message}}`` for one case.

    Runs in a child process (see the module docstring for the method).
    """
    if device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
        message = "unavailable: needs Linux /proc"
        return {op: dict.fromkeys(implementations, message) for op in operations}
    import tnconv

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    package_root = str(Path(tnconv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    request = {
        "case": case.to_json(),
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "operations": list(operations),
        "implementations": list(implementations),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tnconv.bench.memory"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        message = f"measuring process failed: {lines[-1]}"
        return {op: dict.fromkeys(implementations, message) for op in operations}
    return json.loads(completed.stdout)


if __name__ == "__main__":
    _child()


def estimate_case_bytes(case: Case, batch: int, dtype: torch.dtype) -> int:
    """A lower bound on the memory one case of the benchmark needs: input, weight, output and
    the unfolded input ``[N, C_in·∏K, ∏O]`` of the baselines, each once (the largest
    operations hold several of these at a time).

    >>> case = Case("m", "c", (1, 3, 32, 32), 8, (3, 3), (1, 1), (1, 1), (1, 1))
    >>> estimate_case_bytes(case, 2, torch.float32)
    312160
    """
    spec = case.spec(batch)
    itemsize = torch.empty((), dtype=dtype).element_size()
    unfolded = batch * spec.in_channels * math.prod(spec.kernel_size) * spec.positions
    elements = math.prod(spec.input_shape) + math.prod(spec.weight_shape) + math.prod(spec.output_shape) + unfolded
    return elements * itemsize


def available_bytes(device: torch.device) -> int | None:
    """Memory the machine can still give (``MemAvailable``, or CUDA's free memory); ``None``
    where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
