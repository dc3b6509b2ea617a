"""Wall time of KFAC's inverse step (eigendecompositions of every layer's factors) against
the number of gloo processes, on ResNet-18's factor shapes (float32 factors, float64
decompositions, the default). Each layer is decomposed on one process (cost-balanced) and
broadcast; every process ends with every inverse.

Run: ``python examples/kfac_distributed_inverse.py --ranks 1,2,4`` (``--threads`` per process,
``--reps``). Slow on 2 cores: twenty float64 eigendecompositions up to 4608×4608 per
repetition. Besides wall time it prints each rank's process time for the step: with more
ranks than free cores wall time cannot fall, but the largest per-rank share is the step's
wall time on a machine with a core per rank.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tnconv
from tnconv.bench.kfac import ResNet18
from tnconv.kfac import KroneckerFactors


def _spd(n: int, g: torch.Generator) -> torch.Tensor:
    m = torch.randn(n, 2 * n, generator=g)
    return (m @ m.T / (2 * n)).unsqueeze(0)


def _worker(rank: int, world: int, port: int, reps: int, threads: int, out: dict) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kfac = tnconv.kfac.KFAC(ResNet18(), torch.nn.CrossEntropyLoss())
    g = torch.Generator().manual_seed(0)
    for name, layer in kfac.layers.items():
        w = layer.module.weight
        d = w[0].numel() + (1 if layer.has_bias else 0)
        kfac.factors[name] = KroneckerFactors(_spd(d, g), _spd(w.shape[0], g))
    times, cpu = [], []
    for _ in range(reps + 1):
        if world > 1:
            dist.barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        kfac.invert()
        cpu.append(time.process_time() - start_cpu)
        if world > 1:
            dist.barrier()
        times.append(time.perf_counter() - start)
    # process time of this rank's share (its decompositions + the broadcasts): on a machine
    # with a core per rank the step's wall time is the largest share
    out[(world, rank)] = statistics.median(cpu[1:] if reps else cpu)
    if rank == 0:
        out[world] = statistics.median(times[1:] if reps else times)
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--reps", type=int, default=3, help="after one warm-up (0: one run, no warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    manager = mp.Manager()
    out = manager.dict()
    for world in (int(r) for r in args.ranks.split(",")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(world, port, args.reps, args.threads, out), nprocs=world)
        shares = [out[(world, rank)] for rank in range(world)]
        speedup = ""
        if 1 in out:
            speedup = f", speed-up {out[1] / out[world]:.2f}x wall, {out[(1, 0)] / max(shares):.2f}x CPU"
        print(
            f"{world} process(es), {args.threads} thread(s) each: inverse step {out[world]:.2f} s wall; "
            f"CPU s per rank {', '.join(f'{t:.2f}' for t in shares)}{speedup}",
            flush=True,
        )


if __name__ == "__main__":
    main()
