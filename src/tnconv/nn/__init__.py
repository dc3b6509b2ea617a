"""``torch.nn``-compatible modules whose computations run as tensor networks."""

from .conv import Conv1d, Conv2d, Conv3d, ConvNd

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvNd"]
