"""Builders of symbolic tensor networks, one per operation of SPEC §3.

Each returns a :class:`~tnconv.network.TensorNetwork` that can be printed, simplified,
drawn, transformed and contracted.

>>> import tnconv
>>> print(tnconv.networks.conv((1, 2, 5), (3, 2, 3)).equation())
abcd,def,bgcf->abge
"""

from .ops.conv import conv_network as conv
from .ops.kfac import kfac_reduce_network as kfac_reduce
from .ops.kfac import kfac_reduce_transpose_network as kfac_reduce_transpose
from .ops.kfac import kfc_network as kfc
from .ops.kfac import kfc_transpose_network as kfc_transpose

__all__ = ["conv", "kfac_reduce", "kfac_reduce_transpose", "kfc", "kfc_transpose"]
