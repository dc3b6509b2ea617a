"""Builders: one module per family of operations, each returning a :class:`~tnconv.symbolic.network.TensorNetwork`."""
