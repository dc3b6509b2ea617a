"""KFAC for whole networks: Kronecker factors of every layer, preconditioning, an optimizer.

>>> import torch, tnconv
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4))
>>> kfac = tnconv.kfac.KFAC(model, torch.nn.MSELoss(), approx="expand")
>>> _ = kfac.update(torch.randn(5, 1, 4, 4), torch.randn(5, 4))
>>> sorted(kfac.factors)
['0', '2']
"""

from .core import KFAC, KroneckerFactors, NonFiniteError
from .ekfac import EKFAC, EigenBasis, EigenCorrectedInverse
from .inverse import KroneckerInverse, damped_inverse
from .layers import KroneckerLayer, kronecker_layer
from .operator import CurvatureOperator
from .optimizer import KFACOptimizer

__all__ = [
    "CurvatureOperator",
    "EKFAC",
    "EigenBasis",
    "EigenCorrectedInverse",
    "KFAC",
    "KFACOptimizer",
    "KroneckerFactors",
    "KroneckerInverse",
    "KroneckerLayer",
    "NonFiniteError",
    "damped_inverse",
    "kronecker_layer",
]
