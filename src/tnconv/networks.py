"""Builders of symbolic tensor networks, one per operation of SPEC §3.

Each returns a :class:`~tnconv.network.TensorNetwork` that can be printed, simplified,
drawn, transformed and contracted.

>>> import tnconv
>>> print(tnconv.networks.conv((1, 2, 5), (3, 2, 3)).equation())
abcd,def,bgcf->abge
"""

from .ops.conv import conv_network as conv
from .ops.ggn import ggn_diagonal_network as ggn_diagonal
from .ops.ggn import ggn_gram_network as ggn_gram
from .ops.gradients import grad_second_moment_network as grad_second_moment
from .ops.gradients import per_sample_weight_grad_network as per_sample_weight_grad
from .ops.kfac import kfac_reduce_network as kfac_reduce
from .ops.kfac import kfac_reduce_transpose_network as kfac_reduce_transpose
from .ops.kfac import kfc_network as kfc
from .ops.kfac import kfc_transpose_network as kfc_transpose
from .ops.transpose import conv_transpose_network as conv_transpose
from .ops.unfold import fold_network as fold
from .ops.unfold import unfold_network as unfold
from .ops.unfold import unfold_transpose_network as unfold_transpose
from .ops.vjp import conv_input_vjp_network as conv_input_vjp
from .ops.vjp import conv_weight_vjp_network as conv_weight_vjp

__all__ = [
    "conv",
    "conv_input_vjp",
    "conv_transpose",
    "conv_weight_vjp",
    "fold",
    "ggn_diagonal",
    "ggn_gram",
    "grad_second_moment",
    "kfac_reduce",
    "kfac_reduce_transpose",
    "kfc",
    "kfc_transpose",
    "per_sample_weight_grad",
    "unfold",
    "unfold_transpose",
]
