"""``torch.nn``-compatible modules whose computations run as tensor networks."""

from .conv import Conv1d, Conv2d, Conv3d, ConvNd
from .convert import convert, revert
from .fold import Fold, Unfold
from .transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, ConvTransposeNd

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvNd",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "ConvTransposeNd",
    "Fold",
    "Unfold",
    "convert",
    "revert",
]
