"""The public torch front-ends: validate the arguments, build the network, execute it.

Each function mirrors its ``torch.nn.functional`` / ``torch.nn.grad`` counterpart (argument
names and orders follow PyTorch's, including ``conv_transpose``'s
``stride, padding, output_padding, groups, dilation`` and ``unfold``'s
``kernel_size, dilation, padding, stride``) and works for any number of spatial dimensions.
"""

from . import curvature_ops  # noqa: F401  (registers tnconv::input_factor*)
from .conv import conv, conv1d, conv2d, conv3d
from .curvature import (
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfac_reduce_root,
    kfac_reduce_root_transpose,
    kfc_factor,
    kfc_factor_transpose,
    output_grad_factor,
)
from .ggn import ggn_diagonal, ggn_gram
from .gradients import grad_second_moment, per_sample_weight_grad
from .pattern import index_pattern
from .transpose import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .unfold import fold, unfold, unfold_transpose
from .vjp import conv_input_jvp, conv_input_vjp, conv_weight_jvp, conv_weight_vjp

__all__ = [
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_input_jvp",
    "conv_input_vjp",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_weight_jvp",
    "conv_weight_vjp",
    "fold",
    "ggn_diagonal",
    "ggn_gram",
    "grad_second_moment",
    "index_pattern",
    "kfac_reduce_factor",
    "kfac_reduce_factor_transpose",
    "kfac_reduce_root",
    "kfac_reduce_root_transpose",
    "kfc_factor",
    "kfc_factor_transpose",
    "output_grad_factor",
    "per_sample_weight_grad",
    "unfold",
    "unfold_transpose",
]
