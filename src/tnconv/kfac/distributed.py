"""Averaging Kronecker factors over the processes of a data-parallel run.

Each process computes its factors from its own share of the batch; averaging them with one
``all_reduce`` gives the factors of the whole batch when the shares are equally large (the
factors are means over samples, see :mod:`tnconv.kfac.core`).

>>> tensors = [torch.ones(2, 2), torch.zeros(3)]
>>> [t.shape for t in all_reduce_mean(tensors)]      # no process group: unchanged
[torch.Size([2, 2]), torch.Size([3])]
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise mean of each tensor over all processes, in one flat ``all_reduce``.

    Returns the tensors unchanged when no process group runs.
    """
    if not tensors or not is_distributed():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    return out
