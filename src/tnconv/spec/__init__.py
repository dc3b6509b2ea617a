"""Shapes, hyper-parameters and their validation: the bottom layer of tnconv (no tensors).

:class:`ConvSpec` describes one (transposed) convolution; :mod:`.validation` is the one
place that rejects bad arguments; :mod:`.geometry` computes output sizes and padding
splits; :class:`IndexPattern` is the symbolic Π of one spatial dimension.
"""

from .convspec import ConvSpec
from .geometry import ConvGeometry, conv_geometry, conv_transpose_geometry, pattern_of
from .pattern import IndexPattern

__all__ = ["ConvGeometry", "ConvSpec", "IndexPattern", "conv_geometry", "conv_transpose_geometry", "pattern_of"]
