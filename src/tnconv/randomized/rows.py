"""Row estimators (``leg="spatial:d"``): output rows of one dimension sampled, on PyTorch's kernels.

A unit is one output row ``o`` of spatial dimension ``d`` (all samples, all positions of the
other dimensions), ``U = O_d`` of them; the estimator keeps a random subset of the rows
(``mode`` as for every estimator: :mod:`tnconv.randomized.sampling`) and rescales, so it is
unbiased with the variances of docs/randomized.md.

A kept row ``o`` reads the *window* of ``x``'s rows ``[s·o − p, s·o − p + w)`` along ``d``
(``w = dl·(K − 1) + 1``), and its contribution is the weight VJP of that window (stride 1
and no padding along ``d``: one output row) and of ``v``'s row ``o``. The kept windows are
gathered in one copy (a strided view ``x.unfold(d, w, s)`` indexed by the kept rows; rows
whose window reaches into the padding are zero-padded separately) and stacked along the
batch, so *one* call of PyTorch's weight-VJP kernel does the work: its multiply-adds are
exactly ``kept/O_d`` of the exact VJP's, and the copy is ``kept·w/I_d ≈ p·K/s`` of ``x``
(rows share no halo, unlike tiles: the price of the finest unit along ``d``). The input
VJP is the same in reverse: the kept rows of ``v`` go through the input-VJP kernel, and
the windows it returns are added into the rows they cover.

>>> x, v = torch.randn(2, 3, 9, 8), torch.randn(2, 4, 7, 8)
>>> g = _Geometry((3, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1)
>>> got = row_weight_vjp(x, v, (4, 3, 3, 1), g, 0, Draw(tuple(range(7)), 1.0))
>>> torch.allclose(got, torch.nn.grad.conv2d_weight(x, (4, 3, 3, 1), v), atol=1e-5)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sampling import Draw
from .tiles import _Geometry, exact_input_vjp, exact_weight_vjp


def _kernel_options(geometry: _Geometry, dim: int) -> tuple[list[int], list[int], list[int] | None]:
    """Stride and torch's symmetric padding with dimension ``dim`` made one window (stride 1,
    no padding), and the explicit ``F.pad`` amounts when another dimension is padded
    asymmetrically (then every kernel padding is 0)."""
    stride = list(geometry.stride)
    stride[dim] = 1
    others = [d for d in range(geometry.dims) if d != dim]
    if all(geometry.left[d] == geometry.right[d] for d in others):
        padding = list(geometry.left)
        padding[dim] = 0
        return stride, padding, None
    explicit: list[int] = []
    for d in reversed(range(geometry.dims)):
        explicit += [0, 0] if d == dim else [geometry.left[d], geometry.right[d]]
    return stride, [0] * geometry.dims, explicit


def _windows(x: torch.Tensor, geometry: _Geometry, dim: int, rows: list[int]) -> torch.Tensor:
    """``x``'s windows of the output ``rows`` of ``dim``, stacked: ``[len(rows)·N, C, …, w, …]``
    (zero rows where a window reaches into the padding)."""
    axis = 2 + dim
    size, stride, left = x.shape[axis], geometry.stride[dim], geometry.left[dim]
    width = geometry.dilation[dim] * (geometry.kernel[dim] - 1) + 1
    starts = [stride * row - left for row in rows]
    inner = [i for i, start in enumerate(starts) if start >= 0 and start + width <= size]
    pieces: dict[int, torch.Tensor] = {}
    if inner:
        offset = (-left) % stride
        view = x.narrow(axis, offset, size - offset).unfold(axis, width, stride)  # [N, C, …, J, …, w]
        last = view.dim() - 1
        order = [axis, *range(axis), last, *range(axis + 1, last)]
        index = torch.tensor([(starts[i] - offset) // stride for i in inner], device=x.device)
        stacked = view.permute(order).index_select(0, index)  # [m, N, C, …, w, …]
        if len(inner) == len(rows):
            return stacked.reshape(-1, *stacked.shape[2:])
        pieces.update(zip(inner, stacked.unbind(0)))
    for i, start in enumerate(starts):
        if i in pieces:
            continue
        low, high = max(start, 0), min(start + width, size)
        pad = [0, 0] * (x.dim() - 1 - axis) + [low - start, start + width - high]
        pieces[i] = F.pad(x.narrow(axis, low, high - low), pad)
    return torch.stack([pieces[i] for i in range(len(rows))]).flatten(0, 1)


def _rows_of(v: torch.Tensor, dim: int, rows: list[int]) -> torch.Tensor:
    """``v``'s output ``rows`` of ``dim``, stacked: ``[len(rows)·N, C_out, …, 1, …]``."""
    axis = 2 + dim
    picked = v.movedim(axis, 0).index_select(0, torch.tensor(rows, device=v.device))  # [m, N, Co, rest…]
    return picked.unsqueeze(axis + 1).flatten(0, 1)


def _live(rows: tuple[int, ...], geometry: _Geometry, dim: int, size: int) -> list[int]:
    """The ``rows`` whose window reads some of the input (a window inside the padding adds nothing)."""
    stride, left = geometry.stride[dim], geometry.left[dim]
    width = geometry.dilation[dim] * (geometry.kernel[dim] - 1) + 1
    return [row for row in rows if stride * row - left < size and stride * row - left + width > 0]


def row_weight_vjp(
    x: torch.Tensor, v: torch.Tensor, weight_shape: tuple[int, ...], geometry: _Geometry, dim: int, draw: Draw
) -> torch.Tensor:
    """The weight VJP over the drawn output rows of spatial dimension ``dim`` (0-based), rescaled."""
    rows = _live(draw.indices, geometry, dim, x.shape[2 + dim])
    if not rows:
        return x.new_zeros(weight_shape)
    stride, padding, explicit = _kernel_options(geometry, dim)
    xs, vs = _windows(x, geometry, dim, rows), _rows_of(v, dim, rows)
    if explicit is not None:
        xs = F.pad(xs, explicit)
    result = exact_weight_vjp(xs, vs, weight_shape, stride, padding, geometry.dilation, geometry.groups)
    return result * draw.scale if draw.scale != 1.0 else result


def row_input_vjp(
    weight: torch.Tensor, v: torch.Tensor, input_shape: tuple[int, ...], geometry: _Geometry, dim: int, draw: Draw
) -> torch.Tensor:
    """The input VJP over the drawn output rows of spatial dimension ``dim`` (0-based), rescaled."""
    rows = _live(draw.indices, geometry, dim, input_shape[2 + dim])
    if not rows:
        return v.new_zeros(input_shape)
    axis = 2 + dim
    stride, padding, explicit = _kernel_options(geometry, dim)
    vs = _rows_of(v, dim, rows)
    if draw.scale != 1.0:
        vs = vs * draw.scale
    width = geometry.dilation[dim] * (geometry.kernel[dim] - 1) + 1
    sizes = list(input_shape[2:])
    if explicit is not None:
        sizes = [size + lo + hi for size, lo, hi in zip(sizes, geometry.left, geometry.right)]
    sizes[dim] = width
    slabs = exact_input_vjp(
        (vs.shape[0], input_shape[1], *sizes), weight, vs, stride, padding, geometry.dilation, geometry.groups
    )
    if explicit is not None:
        for d in range(geometry.dims):
            if d != dim:
                slabs = slabs.narrow(2 + d, geometry.left[d], input_shape[2 + d])
    slabs = slabs.unflatten(0, (len(rows), input_shape[0]))  # [m, N, C, …, w, …]
    left = geometry.left[dim]
    padded = list(input_shape)
    padded[axis] = input_shape[axis] + left + geometry.right[dim] + width  # room for every window
    result = slabs.new_zeros(padded)
    starts = torch.tensor([geometry.stride[dim] * row for row in rows], device=v.device)  # padded coordinates
    functional = torch._C._are_functorch_transforms_active()  # (vmap, grad: no in-place adds)
    for tap in range(width):
        piece = slabs.select(axis + 1, tap).movedim(0, axis)  # [N, C, …, m, …]
        if functional:
            result = result.index_add(axis, starts + tap, piece)
        else:
            result.index_add_(axis, starts + tap, piece)
    return result.narrow(axis, left, input_shape[axis])


__all__ = ["row_input_vjp", "row_weight_vjp"]
