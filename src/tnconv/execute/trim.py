"""Strategy ``"trim"``: kernel taps that never touch the input are not computed.

:func:`tnconv.simplify.taps.trim_taps` finds, symbolically and once per network, the taps
whose ``Π[:, :, k]`` is all zero (dilation 36 on a 16×16 map, padding as wide as the
kernel's reach) and the network restricted to the others. Here the data tensors carrying a
trimmed leg (the weight's ``k``, a fold's ``(c k)`` rows) are narrowed to the kept range,
the trimmed network is contracted by ``strategy="auto"`` (any lowering: native kernels on
the smaller kernel, im2col KFC on fewer rows, …), and an output axis carrying a trimmed
leg (KFC / KFAC-reduce factors, unfold, weight VJP) gets zero blocks for the cut taps.
The result is exact: every dropped term is a product with a zero of ``Π`` (a factor's
zero rows meet a non-finite row as ``0 · NaN``, NaN in torch's recipe: that too is kept).

>>> import torch, tnconv
>>> tn = tnconv.networks.kfc((2, 3, 16, 16), 3, dilation=36, padding=36)
>>> x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
>>> torch.allclose(contract(tn, {"x": x}), contract(tn, {"x": x}, strategy="einsum"))
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..simplify.taps import TapTrim, trim_taps
from ..symbolic.network import TensorNetwork
from ..symbolic.squares import SquareNetwork
from .dispatch import add_bias, contract, known_finite, register_strategy


def narrow_inputs(trim: TapTrim, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the trimmed network: those carrying a trimmed leg narrowed (views
    where the leg has an axis of its own, else one copy of the kept part)."""
    prepared = dict(tensors)
    for key, legs, narrows, shape in trim.inputs:
        t = tensors[key].reshape(legs)
        for dim, start, length in narrows:
            t = t.narrow(dim, start, length)
        prepared[key] = t.reshape(shape)
    return prepared


def embed_output(trim: TapTrim, result: torch.Tensor) -> torch.Tensor:
    """The full result: ``result`` in the kept ranges of the output legs, zero elsewhere."""
    legs, narrows = trim.output
    if not narrows:
        return result
    full = result.new_zeros(trim.original.output_shape)  # the result owns its memory (no view)
    part = full.view(legs)
    for dim, start, length in narrows:
        part = part.narrow(dim, start, length)
    part.copy_(result.reshape(part.shape))
    return full


def _bias_inside(trim: TapTrim) -> bool:
    """Whether a bias can go to the trimmed network's kernel: only when its result is the
    whole output (no zero blocks, which must get the bias too)."""
    return not trim.output[1]


def _square_nonfinite(network: SquareNetwork, full: torch.Tensor) -> torch.Tensor:
    """``J J'`` as torch's recipe (``J`` materialised, then a dense product) has it: a cut
    row of ``J`` is zero, and ``0 · NaN`` is NaN, so entry ``(i, j)`` is non-finite wherever
    row ``i`` or ``j`` of ``J`` is; such a row is one whose diagonal entry ``Σ J²`` is."""
    if known_finite(full):
        return full
    keep = math.prod(network.output_shape[: len(network.keep)])
    outer = math.isqrt(full.numel() // keep)
    square = full.reshape(keep, outer, outer)
    bad = ~torch.isfinite(torch.diagonal(square, dim1=1, dim2=2))  # [keep, outer]
    spread = bad[:, :, None] | bad[:, None, :]
    nan = torch.full((), float("nan"), dtype=full.dtype, device=full.device)
    return torch.where(spread & torch.isfinite(square), nan, square).reshape(full.shape)


def contract_trimmed(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Strategy ``"trim"``: contract the network on its touched taps only (``None``: every tap
    reads the input)."""
    trim = trim_taps(network)
    if trim is None:
        return None
    inner_bias = bias if bias is not None and _bias_inside(trim) else None
    result = contract(trim.network, narrow_inputs(trim, tensors), bias=inner_bias)
    result = embed_output(trim, result)
    if isinstance(network, SquareNetwork) and network.outer and trim.output[1]:
        result = _square_nonfinite(network, result)
    return add_bias(result, bias) if bias is not None and inner_bias is None else result


register_strategy(
    "trim",
    contract_trimmed,
    "kernel taps that read only padding are cut off symbolically (zero blocks in the result)",
    priority=0,
    fuses_bias=True,
)

__all__ = ["contract_trimmed", "embed_output", "narrow_inputs"]
