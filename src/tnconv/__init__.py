"""tnconv: convolutions of any dimension as tensor networks, and what follows from them.

>>> import torch, tnconv
>>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
>>> tnconv.conv(x, w, stride=2, padding=1).shape
torch.Size([2, 4, 4, 4])
"""

from . import execute, kfac, networks, nn, randomized, simplify  # noqa: F401  (execute registers the strategies)
from .caching import cache_stats, clear_caches
from .diagrams import draw
from .execute.budget import chunk_budget, get_chunk_budget
from .execute.explain import Explanation, explain  # noqa: F401  (tnconv.explain)
from .functional import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_input_jvp,
    conv_input_vjp,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    conv_weight_jvp,
    conv_weight_vjp,
    fold,
    ggn_diagonal,
    ggn_gram,
    grad_second_moment,
    index_pattern,
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfac_reduce_root,
    kfac_reduce_root_transpose,
    kfc_factor,
    kfc_factor_transpose,
    output_grad_factor,
    per_sample_weight_grad,
    unfold,
    unfold_transpose,
)
from .spec import ConvSpec, IndexPattern
from .symbolic.network import Node, TensorNetwork

__version__ = "0.1.0"

__all__ = [
    "ConvSpec",
    "cache_stats",
    "chunk_budget",
    "clear_caches",
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
    "get_chunk_budget",
    "conv_input_vjp",
    "conv_weight_jvp",
    "conv_weight_vjp",
    "draw",
    "fold",
    "ggn_diagonal",
    "ggn_gram",
    "grad_second_moment",
    "index_pattern",
    "kfac",
    "kfac_reduce_factor",
    "kfac_reduce_factor_transpose",
    "kfac_reduce_root",
    "kfac_reduce_root_transpose",
    "kfc_factor",
    "kfc_factor_transpose",
    "networks",
    "nn",
    "randomized",
    "unfold",
    "unfold_transpose",
    "output_grad_factor",
    "per_sample_weight_grad",
]
