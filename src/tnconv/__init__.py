"""tnconv: convolutions of any dimension as tensor networks, and what follows from them.

>>> import torch, tnconv
>>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
>>> tnconv.conv(x, w, stride=2, padding=1).shape
torch.Size([2, 4, 4, 4])
"""

from . import kfac, networks, nn
from .network import Node, TensorNetwork
from .ops.conv import conv, conv1d, conv2d, conv3d
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
    "index_pattern",
    "kfac",
    "networks",
    "nn",
]
