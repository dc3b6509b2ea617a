"""tnconv: convolutions of any dimension as tensor networks, and what follows from them.

>>> import torch, tnconv
>>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
>>> tnconv.conv(x, w, stride=2, padding=1).shape
torch.Size([2, 4, 4, 4])
"""

from . import networks, nn
from .network import Node, TensorNetwork
from .ops.conv import conv, conv1d, conv2d, conv3d
from .ops.ggn import ggn_diagonal, ggn_gram
from .ops.gradients import grad_second_moment, per_sample_weight_grad
from .ops.kfac import (
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfc_factor,
    kfc_factor_transpose,
    output_grad_factor,
)
from .ops.transpose import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .ops.unfold import fold, unfold, unfold_transpose
from .ops.vjp import conv_input_jvp, conv_input_vjp, conv_weight_jvp, conv_weight_vjp
from .pattern import IndexPattern, index_pattern

__version__ = "0.1.0"

__all__ = [
    "IndexPattern",
    "Node",
    "TensorNetwork",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_input_jvp",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_input_vjp",
    "conv_weight_jvp",
    "conv_weight_vjp",
    "fold",
    "ggn_diagonal",
    "ggn_gram",
    "grad_second_moment",
    "index_pattern",
    "kfac_reduce_factor",
    "kfac_reduce_factor_transpose",
    "kfc_factor",
    "kfc_factor_transpose",
    "networks",
    "nn",
    "unfold",
    "unfold_transpose",
    "output_grad_factor",
    "per_sample_weight_grad",
]
