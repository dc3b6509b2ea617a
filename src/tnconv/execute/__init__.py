"""Execution: the only layer where tensors meet networks.

:func:`contract` (in :mod:`.dispatch`) is the one entry point; the strategies register
themselves with :func:`register_strategy` when their modules are imported here, in the
order ``strategy="auto"`` tries them:

========================  =====================================================================
``"separable"``           window sums ``Σ_o Π`` as small matrices on the data's axes (KFAC-reduce)
``"square"``              ``J·J'`` networks (curvature) through a materialised ``J`` when cheaper
``"native"``              PyTorch's convolution kernels, when the network is one (bias fused)
``"col2im"``              fold / unfold_transpose as strided adds into a padded buffer (no Π)
``"structured"``          index patterns on data become strided views, then einsum
``"simplified"``          dense einsum of the simplified network (always applies)
``"einsum"``              dense index patterns, the reference (not tried by ``"auto"``)
========================  =====================================================================

:func:`tnconv.execute.autodiff.contract` wraps the dispatcher in an autograd Function whose
derivatives are the contractions of derived networks.
"""

from . import col2im, dense, gemm_col2im, native, separable, squares, structured, trim  # noqa: F401  (each registers its strategy)
from .budget import chunk_budget, get_chunk_budget
from .dispatch import STRATEGIES, auto_order, bind, contract, register_strategy, strategies

__all__ = [
    "STRATEGIES",
    "auto_order",
    "bind",
    "chunk_budget",
    "contract",
    "get_chunk_budget",
    "register_strategy",
    "strategies",
]
