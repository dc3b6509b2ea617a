"""Timing per docs/reference.md §7: warm-up, then rounds that call every implementation once each.

The order of the implementations rotates from round to round, so that none of them always
runs right after another (caches, turbo states and other agents on a shared machine then
affect all of them alike). On CUDA each call is bracketed by CUDA events (which include the
host-side work between them, since the events are queued on an idle stream); on CPU by
``time.perf_counter`` (``clock="wall"``) or by ``time.process_time`` (``clock="cpu"``: the
CPU time of this process, all its threads, which other loads of a shared machine do not
inflate as much as wall time; best with one thread, ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

CLOCKS = ("wall", "cpu")


def time_call(function: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds one call of ``function`` takes (CUDA events on a CUDA device; on CPU wall time,
    or process CPU time with ``clock="cpu"``)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    now = time.process_time if clock == "cpu" else time.perf_counter
    begin = now()
    function()
    return now() - begin


def time_alternating(
    functions: Mapping[str, Callable[[], object]],
    reps: int,
    warmup: int,
    device: torch.device,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """``reps`` timings (seconds) per implementation, after ``warmup`` untimed rounds.

    >>> times = time_alternating({"a": lambda: None, "b": lambda: None}, reps=3, warmup=1, device=torch.device("cpu"))
    >>> sorted(times), [len(t) for t in times.values()]
    (['a', 'b'], [3, 3])
    """
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(reps):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(functions[name], device, clock))
    return times
