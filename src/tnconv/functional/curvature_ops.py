"""The curvature statistics as ``torch.library`` custom operators (see :mod:`tnconv.execute.ops`).

The KFAC input factors:

``tnconv::input_factor`` and ``tnconv::input_factor_transpose`` run the eager front-ends of
:mod:`tnconv.functional.curvature` (which call them by name while compiling or tracing, so
the import goes one way: this module imports ``curvature``). The factors are statistics,
not differentiated: the operators have no autograd formula. Their fake implementations give
the ``[G, d, d]`` shape (``d = C_in/G·∏K``, ``+ 1`` with ``bias``) after validating the
arguments through the factor's network builder; ``approx="reduce_root"`` is
:func:`tnconv.kfac_reduce_root` (``[G, N, d]``).

>>> import torch, tnconv
>>> x = torch.randn(2, 4, 6, 6)
>>> a = torch.ops.tnconv.input_factor(x, "expand", [3, 3], [1, 1], [1, 1], "", [1, 1], 2, False)
>>> torch.allclose(a, tnconv.kfc_factor(x, 3, padding=1, groups=2))
True

The weight statistics of :mod:`tnconv.functional.gradients` and :mod:`tnconv.functional.ggn`
(per-sample gradients, their second moment, the GGN diagonal and Gram matrix) are one
operator ``tnconv::weight_statistic``, the statistic named by a string; like the factors it
has no autograd formula, and the bias parts, a few plain torch ops on ``v``/``s``, stay in
the front-ends' graph:

>>> v = torch.randn(2, 4, 6, 6)
>>> m = torch.ops.tnconv.weight_statistic(x, v, "grad_second_moment", [3, 3], [1, 1], [1, 1], "", [1, 1], 2)
>>> torch.allclose(m, tnconv.grad_second_moment(x, v, 3, padding=1, groups=2))
True
"""

from __future__ import annotations

import math

import torch

from ..spec.validation import check_choice
from ..symbolic.builders.curvature import input_patches, input_patches_transpose
from ..symbolic.builders.ggn import ggn_factor_network
from ..symbolic.builders.gradients import per_sample_weight_grad_network
from .curvature import (
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfac_reduce_root,
    kfac_reduce_root_transpose,
    kfc_factor,
    kfc_factor_transpose,
)
from .ggn import ggn_diagonal, ggn_gram
from .gradients import grad_second_moment, per_sample_weight_grad

_FORWARD = {"expand": kfc_factor, "reduce": kfac_reduce_factor, "reduce_root": kfac_reduce_root}
_TRANSPOSE = {
    "expand": kfc_factor_transpose,
    "reduce": kfac_reduce_factor_transpose,
    "reduce_root": kfac_reduce_root_transpose,
}


def _fake_factor(x: torch.Tensor, approx: str, kernel_size: list[int], groups: int, bias: bool) -> torch.Tensor:
    """An empty tensor shaped like the factor (``[G, d, d]``, ``d = C_in/G·∏K (+ 1)``) or the
    root (``[G, N, d]``; one NaN row for an empty batch)."""
    d = int(x.shape[1]) // groups * math.prod(kernel_size) + bool(bias)
    return x.new_empty(groups, max(int(x.shape[0]), 1), d) if approx == "reduce_root" else x.new_empty(groups, d, d)


def _padding(padding: list[int], name: str) -> object:
    return name if name else tuple(padding)


def _approx(approx: str) -> str:
    return check_choice(approx, tuple(_FORWARD), "approx")


@torch.library.custom_op("tnconv::input_factor", mutates_args=())
def input_factor(
    x: torch.Tensor,
    approx: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
    bias: bool,
) -> torch.Tensor:
    """:func:`tnconv.kfc_factor` (``approx="expand"``), :func:`tnconv.kfac_reduce_factor`
    (``"reduce"``) or :func:`tnconv.kfac_reduce_root` (``"reduce_root"``)."""
    function = _FORWARD[_approx(approx)]
    arguments = (tuple(kernel_size), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)
    return function(x, *arguments, bias=bias).contiguous()


@input_factor.register_fake
def _(x, approx, kernel_size, stride, padding, padding_name, dilation, groups, bias):  # type: ignore[no-untyped-def]
    _approx(approx)
    shape = tuple(int(s) for s in x.shape)
    input_patches(shape, tuple(kernel_size), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)
    return _fake_factor(x, approx, kernel_size, groups, bias)


@torch.library.custom_op("tnconv::input_factor_transpose", mutates_args=())
def input_factor_transpose(
    x: torch.Tensor,
    approx: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    groups: int,
    bias: bool,
) -> torch.Tensor:
    """:func:`tnconv.kfc_factor_transpose`, :func:`tnconv.kfac_reduce_factor_transpose` or
    :func:`tnconv.kfac_reduce_root_transpose` (``approx`` as for ``input_factor``)."""
    function = _TRANSPOSE[_approx(approx)]
    arguments = (tuple(kernel_size), tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation), groups)
    return function(x, *arguments, bias=bias).contiguous()


@input_factor_transpose.register_fake
def _(x, approx, kernel_size, stride, padding, output_padding, dilation, groups, bias):  # type: ignore[no-untyped-def]
    _approx(approx)
    shape = tuple(int(s) for s in x.shape)
    input_patches_transpose(
        shape, tuple(kernel_size), tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation), groups
    )
    return _fake_factor(x, approx, kernel_size, groups, bias)


# ------------------------------------------------------------------ weight statistics
_STATISTICS = {
    "per_sample_weight_grad": per_sample_weight_grad,
    "grad_second_moment": grad_second_moment,
    "ggn_diagonal": ggn_diagonal,
    "ggn_gram": ggn_gram,
}


def _statistic(statistic: str) -> str:
    return check_choice(statistic, tuple(_STATISTICS), "statistic")


@torch.library.custom_op("tnconv::weight_statistic", mutates_args=())
def weight_statistic(
    x: torch.Tensor,
    v: torch.Tensor,
    statistic: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_name: str,
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """The weight part of ``tnconv.<statistic>(x, v, …)`` (``v`` is ``s`` for the GGN ones)."""
    function = _STATISTICS[_statistic(statistic)]
    arguments = (tuple(kernel_size), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)
    return function(x, v, *arguments).contiguous()  # type: ignore[union-attr]


@weight_statistic.register_fake
def _(x, v, statistic, kernel_size, stride, padding, padding_name, dilation, groups):  # type: ignore[no-untyped-def]
    _statistic(statistic)
    x_shape, v_shape = tuple(int(s) for s in x.shape), tuple(int(s) for s in v.shape)
    arguments = (tuple(kernel_size), tuple(stride), _padding(padding, padding_name), tuple(dilation), groups)
    if statistic.startswith("ggn"):
        network = ggn_factor_network(x_shape, v_shape, *arguments, merged=False)
        if statistic == "ggn_gram":
            rows = v_shape[0] * v_shape[1]
            return x.new_empty(rows, rows)
        return x.new_empty(network.output_shape[2:])
    network = per_sample_weight_grad_network(x_shape, v_shape, *arguments)
    shape = network.output_shape if statistic == "per_sample_weight_grad" else network.output_shape[1:]
    return x.new_empty(shape)
