"""Builders of symbolic tensor networks, one per operation of docs/reference.md §3.

Each returns a :class:`~tnconv.TensorNetwork` that can be printed, simplified,
drawn, transformed and contracted.

>>> import tnconv
>>> print(tnconv.networks.conv((1, 2, 5), (3, 2, 3)).equation())
abcd,def,bgcf->abge
"""

from .symbolic.builders.conv import conv_network as conv
from .symbolic.builders.curvature import kfac_reduce_network as kfac_reduce
from .symbolic.builders.curvature import kfac_reduce_transpose_network as kfac_reduce_transpose
from .symbolic.builders.curvature import kfc_network as kfc
from .symbolic.builders.curvature import kfc_transpose_network as kfc_transpose
from .symbolic.builders.ggn import ggn_diagonal_network as ggn_diagonal
from .symbolic.builders.ggn import ggn_gram_network as ggn_gram
from .symbolic.builders.gradients import grad_second_moment_network as grad_second_moment
from .symbolic.builders.gradients import per_sample_weight_grad_network as per_sample_weight_grad
from .symbolic.builders.transpose import conv_transpose_network as conv_transpose
from .symbolic.builders.unfold import fold_network as fold
from .symbolic.builders.unfold import unfold_network as unfold
from .symbolic.builders.unfold import unfold_transpose_network as unfold_transpose
from .symbolic.builders.vjp import conv_input_vjp_network as conv_input_vjp
from .symbolic.builders.vjp import conv_weight_vjp_network as conv_weight_vjp

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
