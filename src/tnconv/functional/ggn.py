"""The GGN diagonal and the GGN Gram matrix of a convolution's weight (docs/reference.md §3).

``s[m, n, c, o]`` holds ``M`` vectors per sample: the columns of a square root of the loss
Hessian ``H_n = Σ_m s_m s_m^T``, backpropagated to the layer output. Each gives the weight
VJP ``J[m, n] = Σ_{o,i} x[n,g,ci,i] Π[i,o,k] s[m,n,g,co,o]`` — the convolution network's
matrix-Jacobian product with ``n`` kept — and the GGN ``G = Σ_{m,n} J[m,n] J[m,n]^T``.

- diagonal: ``Σ_{m,n} J[m,n] ⊙ J[m,n]``, shaped like the weight;
- Gram matrix: ``J[m,n] · J[m',n']`` over all weight legs, ``[M·N, M·N]`` (its non-zero
  eigenvalues are the GGN's).

Both are one network ``J · J'``, contracted directly unless materialising ``J`` is cheaper.
"""

from __future__ import annotations

import torch

from ..execute.ops import traced_weight_statistic, tracing
from ..execute.squares import contract_square
from ..spec.validation import IntOrTuple, Padding, check_data_pair
from ..symbolic.builders.ggn import _diagonal_axes, ggn_factor_network


def ggn_diagonal(
    x: torch.Tensor,
    s: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Diagonal of the GGN ``Σ_{m,n} J_{m,n} J_{m,n}^T`` w.r.t. a convolution's weight (and bias).

    Args:
        x: the layer input ``[N, C_in, I_1, …, I_D]``.
        s: ``[M, N, C_out, O_1, …, O_D]``: per sample, ``M`` columns of a square root of the
            loss Hessian w.r.t. the network output, backpropagated to this layer's output.
        kernel_size, stride, padding, dilation, groups: the convolution's.
        bias: also return the bias diagonal.

    Returns:
        ``[C_out, C_in/G, K_1, …, K_D]``; with ``bias`` a tuple with ``[C_out]`` too.

    >>> import torch, tnconv
    >>> x, s = torch.randn(2, 3, 6, 6), torch.randn(4, 2, 5, 6, 6)
    >>> diag, diag_b = tnconv.ggn_diagonal(x, s, 3, padding="same", bias=True)
    >>> diag.shape, diag_b.shape
    (torch.Size([5, 3, 3, 3]), torch.Size([5]))
    """
    check_data_pair(x, s, "s")
    if tracing():  # torch.compile / export / jit.trace: one operator (tnconv.functional.curvature_ops)
        diagonal = traced_weight_statistic(x, s, "ggn_diagonal", kernel_size, stride, padding, dilation, groups)
    else:
        factor = ggn_factor_network(x.shape, s.shape, kernel_size, stride, padding, dilation, groups, merged=False)
        diagonal = contract_square(factor, {"x": x, "s": s}, keep=_diagonal_axes(factor))
    if not bias:
        return diagonal
    return diagonal, s.flatten(3).sum(-1).square().sum((0, 1))


def ggn_gram(
    x: torch.Tensor,
    s: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    bias: bool = False,
) -> torch.Tensor:
    """Gram matrix ``J J^T`` of the GGN's factor, ``G = J^T J``, ``J`` = ``[M·N, #params]``.

    Arguments as :func:`ggn_diagonal`. Row ``m·N + n`` belongs to column ``m`` of sample
    ``n``. With ``bias`` the parameters are the weight and the bias (the bias Jacobian
    ``Σ_o s`` adds its Gram matrix).

    Returns:
        ``[M·N, M·N]``, symmetric positive semi-definite.

    >>> import torch, tnconv
    >>> x, s = torch.randn(2, 3, 6), torch.randn(4, 2, 5, 4)
    >>> tnconv.ggn_gram(x, s, 3).shape
    torch.Size([8, 8])
    """
    check_data_pair(x, s, "s")
    if tracing():
        gram = traced_weight_statistic(x, s, "ggn_gram", kernel_size, stride, padding, dilation, groups)
    else:
        factor = ggn_factor_network(x.shape, s.shape, kernel_size, stride, padding, dilation, groups, merged=True)
        gram = contract_square(factor, {"x": x, "s": s}, outer=(0,))
    if not bias:
        return gram
    sums = s.flatten(3).sum(-1).flatten(0, 1)  # [M·N, C_out]
    return gram + sums @ sums.T
