"""Builders of symbolic tensor networks, one per operation of SPEC §3.

Each returns a :class:`~tnconv.network.TensorNetwork` that can be printed, simplified,
drawn, transformed and contracted.

>>> import tnconv
>>> print(tnconv.networks.conv((1, 2, 5), (3, 2, 3)).equation())
abcd,def,bgcf->abge
"""

from .ops.conv import conv_network as conv

__all__ = ["conv"]
