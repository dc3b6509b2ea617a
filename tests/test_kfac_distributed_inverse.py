"""Distributed KFAC/EKFAC with 2 and 4 gloo processes (CPU): bucketed factor averaging and
one-owner inverses broadcast to all equal one process on the concatenated batch."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tnconv.kfac import EKFAC, KFAC
from tnconv.kfac.distributed import _buckets, all_reduce_mean, assign_owners

from .test_kfac_distributed import _free_port

PER_PROCESS = 2


def _worker(rank: int, world: int, port: int) -> None:
    from .test_kfac_model import mixed_net

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(world * PER_PROCESS, 2, 7, 7, generator=g, dtype=torch.float64)
        t = torch.randint(0, 3, (world * PER_PROCESS,), generator=g)
        share = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
        # bucketed all-reduce with tiny buckets: several buckets, mixed dtypes
        tensors = [torch.full((3, 3), float(rank)), torch.full((5,), float(rank), dtype=torch.float64), torch.ones(2)]
        averaged = all_reduce_mean(tensors, bucket_bytes=40)
        mean_rank = (world - 1) / 2
        for before, after in zip(tensors, averaged):
            assert after.dtype == before.dtype and after.shape == before.shape
        torch.testing.assert_close(averaged[0], torch.full((3, 3), mean_rank))
        torch.testing.assert_close(averaged[1], torch.full((5,), mean_rank, dtype=torch.float64))
        torch.testing.assert_close(averaged[2], torch.ones(2))
        loss_fn = torch.nn.CrossEntropyLoss()
        # EKFAC with expand: with reduce, per-sample gradients reach the null space of A, where
        # the eigenbasis (hence S) is arbitrary; with expand they stay in the factors' ranges
        for cls, inverse, approx in ((KFAC, "eigen", "reduce"), (KFAC, "factor", "expand"), (EKFAC, "eigen", "expand")):
            model = mixed_net()
            many = cls(model, loss_fn, approx=approx, damping=0.1, inverse=inverse)
            many.update(x[share], t[share])
            many.invert()
            one = cls(model, loss_fn, approx=approx, damping=0.1, inverse=inverse, distributed=False)
            one.update(x, t)
            one.invert()
            for name, f in one.factors.items():
                torch.testing.assert_close(many.factors[name].A, f.A, rtol=1e-10, atol=1e-12)
                torch.testing.assert_close(many.factors[name].B, f.B, rtol=1e-10, atol=1e-12)
            if cls is EKFAC:  # S depends on the basis inside degenerate eigenspaces; the operator does not
                torch.testing.assert_close(many.operator().to_dense(), one.operator().to_dense(), rtol=1e-8, atol=1e-12)
            model.zero_grad()
            loss_fn(model(x), t).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            torch.testing.assert_close(many.precondition(grads), one.precondition(grads), rtol=1e-8, atol=1e-10)
            # every process holds the same inverses (the owner's, broadcast)
            for name, inv in many.inverses.items():
                for field in ("A_eigvecs", "B_eigvecs", "A_inv", "B_inv", "corrections"):
                    value = getattr(inv, field, None)
                    if value is None:
                        continue
                    gathered = [torch.empty_like(value) for _ in range(world)]
                    dist.all_gather(gathered, value.contiguous())
                    for other in gathered:
                        assert torch.equal(other, value), (name, field)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("world", [2, 4])
def test_distributed_equals_one_process(world):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    context = mp.spawn(_worker, args=(world, _free_port()), nprocs=world, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the distributed workers did not finish in time")


def test_cost_balanced_assignment_and_buckets():
    owners = assign_owners({"big": 100.0, "mid": 60.0, "small": 50.0, "tiny": 5.0}, 2)
    assert owners == {"big": 0, "mid": 1, "small": 1, "tiny": 0}
    loads = [
        sum(c for n, c in {"big": 100, "mid": 60, "small": 50, "tiny": 5}.items() if owners[n] == r) for r in (0, 1)
    ]
    assert max(loads) == 110
    assert set(assign_owners({"a": 1.0}, 4).values()) == {0}
    tensors = [torch.zeros(10), torch.zeros(10), torch.zeros(3, dtype=torch.float64), torch.zeros(10)]
    buckets = _buckets(tensors, bucket_bytes=80)  # 40 bytes each float32 tensor
    assert sorted(i for b in buckets for i in b) == [0, 1, 2, 3]
    assert [0, 1] in buckets and [3] in buckets and [2] in buckets
