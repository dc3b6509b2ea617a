"""KFAC over the processes of a data-parallel run (``torch.distributed``).

- **Factors**: each process computes its factors from its own share of the batch;
  averaging them gives the factors of the whole batch when the shares are equally large
  (the factors are means over samples, see :mod:`tnconv.kfac.core`). The average is one
  ``all_reduce`` per *bucket* of about ``bucket_bytes`` (tensors packed flat per dtype), so
  the extra memory is one bucket, not a copy of every factor.
- **Inverses**: each layer's eigendecomposition / inverse is computed on one process, chosen
  by a greedy cost-balanced assignment (largest cost first, to the least loaded process;
  cost ``∝ G·(d³ + c³)``), then broadcast from it, so every process ends with the same
  inverses as one process would compute while the work is shared.

>>> tensors = [torch.ones(2, 2), torch.zeros(3)]
>>> [t.shape for t in all_reduce_mean(tensors)]      # no process group: unchanged
[torch.Size([2, 2]), torch.Size([3])]
>>> assign_owners({"a": 8.0, "b": 5.0, "c": 4.0, "d": 1.0}, 2)
{'a': 0, 'b': 1, 'c': 1, 'd': 0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch
import torch.distributed as dist

BUCKET_BYTES = 32 * 2**20


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[int]]:
    """Indices of ``tensors`` grouped into buckets of one dtype/device and ≲ ``bucket_bytes``."""
    buckets: list[list[int]] = []
    open_: dict[tuple[torch.dtype, torch.device], tuple[list[int], int]] = {}
    for i, t in enumerate(tensors):
        key = (t.dtype, t.device)
        members, size = open_.get(key, ([], 0))
        nbytes = t.numel() * t.element_size()
        if members and size + nbytes > bucket_bytes:
            buckets.append(members)
            members, size = [], 0
        open_[key] = (members + [i], size + nbytes)
    buckets.extend(members for members, _ in open_.values() if members)
    return buckets


def all_reduce_mean(tensors: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> list[torch.Tensor]:
    """The element-wise mean of each tensor over all processes, one ``all_reduce`` per bucket.

    Returns the tensors unchanged when no process group runs.
    """
    if not tensors or not is_distributed():
        return tensors
    world = dist.get_world_size()
    out: list[torch.Tensor] = list(tensors)
    for bucket in _buckets(tensors, bucket_bytes):
        if len(bucket) == 1:
            flat = tensors[bucket[0]].detach().clone().reshape(-1)
        else:
            flat = torch.cat([tensors[i].reshape(-1) for i in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        start = 0
        for i in bucket:
            n = tensors[i].numel()
            out[i] = flat[start : start + n].view_as(tensors[i])
            start += n
    return out


def assign_owners(costs: Mapping[str, float], world: int) -> dict[str, int]:
    """Greedy longest-processing-time assignment of jobs to ``world`` processes.

    Ties are broken by name, so every process computes the same assignment.
    """
    loads = [0.0] * world
    owners = {}
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[name] = rank
        loads[rank] += costs[name]
    return owners


def _tensor_fields(obj: Any) -> list[str]:
    return [f.name for f in fields(obj) if isinstance(getattr(obj, f.name), torch.Tensor)]


def invert_distributed(
    names: Sequence[str],
    cost: Callable[[str], float],
    invert: Callable[[str], Any],
    template: Callable[[str], Any],
) -> dict[str, Any]:
    """Invert each layer on its owner and broadcast the result (one broadcast per owner).

    Args:
        names: the layers, the same on every process.
        cost: the relative cost of inverting one layer.
        invert: computes a layer's inverse (a dataclass of tensors), run by its owner only.
        template: an inverse with tensors of the right shapes and dtypes to receive into.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    owners = assign_owners({n: float(cost(n)) for n in names}, world)
    results = {n: invert(n) if owners[n] == rank else template(n) for n in names}
    for owner in range(world):
        owned = [n for n in names if owners[n] == owner]
        tensors = [getattr(results[n], f) for n in owned for f in _tensor_fields(results[n])]
        if not tensors:
            continue
        flat = torch.cat([t.reshape(-1) for t in tensors]) if owner == rank else None
        if flat is None:
            flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
        dist.broadcast(flat, src=owner)
        if owner != rank:
            start = 0
            for n in owned:
                for f in _tensor_fields(results[n]):
                    t = getattr(results[n], f)
                    setattr(results[n], f, flat[start : start + t.numel()].view_as(t).clone())
                    start += t.numel()
    return results
