"""Data-parallel KFAC: two processes on gloo (CPU) agree with one process on the whole batch."""

from __future__ import annotations

import copy
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tnconv.kfac import KFAC, KFACOptimizer

WORLD = 2
PER_PROCESS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int) -> None:
    from .test_kfac_model import mixed_net

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(0)  # every process draws the same whole batch
        x = torch.randn(WORLD * PER_PROCESS, 2, 7, 7, generator=g, dtype=torch.float64)
        t = torch.randint(0, 3, (WORLD * PER_PROCESS,), generator=g)
        share = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
        for reduction in ("mean", "sum"):
            loss_fn = torch.nn.CrossEntropyLoss(reduction=reduction)
            for approx in ("expand", "reduce"):
                model = mixed_net()
                averaged = KFAC(model, loss_fn, approx=approx)
                averaged.update(x[share], t[share])
                whole = KFAC(model, loss_fn, approx=approx, distributed=False)
                whole.update(x, t)
                # the mean over processes of per-process sums is the whole sum / WORLD
                b_scale = 1.0 if reduction == "mean" else 1.0 / WORLD
                for name, factors in whole.factors.items():
                    torch.testing.assert_close(averaged.factors[name].A, factors.A, rtol=1e-10, atol=1e-12)
                    torch.testing.assert_close(averaged.factors[name].B, b_scale * factors.B, rtol=1e-10, atol=1e-12)

        # unchanged training code under DistributedDataParallel: the same step as one process
        loss_fn = torch.nn.CrossEntropyLoss()
        model = mixed_net()
        reference = copy.deepcopy(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = KFACOptimizer(ddp, loss_fn, lr=0.3, damping=0.1, T_inv=2)
        single = KFACOptimizer(reference, loss_fn, lr=0.3, damping=0.1, T_inv=2, distributed=False)
        for _ in range(2):
            opt.zero_grad()
            loss_fn(ddp(x[share]), t[share]).backward()
            opt.step(x[share], t[share])
            single.zero_grad()
            loss_fn(reference(x), t).backward()
            single.step(x, t)
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes_average_to_the_whole_batch():
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    context = mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed workers did not finish in time")
