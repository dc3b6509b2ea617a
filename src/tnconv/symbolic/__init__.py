"""Symbolic tensor networks: pure data and algebra, no tensors.

:mod:`.network` (nodes, legs, transformations), :mod:`.derive` (Jacobians, VJPs, JVPs),
:mod:`.squares` (``J·J'``), :mod:`.builders` (one module per family of operations) and
:mod:`.registry` (every operation by name, from a :class:`~tnconv.spec.ConvSpec`).
"""

from .network import Node, TensorNetwork

__all__ = ["Node", "TensorNetwork"]
