"""Randomized backpropagation ("tensor dropout", docs/reference.md §6): VJPs that contract only a random
subset of one summed leg, and do correspondingly less work.

A VJP is a sum over a leg ``j`` (batch, output position, output channel):
``G = Σ_j G_j``. Keeping a random subset ``K`` of the leg's values and rescaling gives an
unbiased estimate ``Ĝ = s · Σ_{j∈K} G_j``:

- ``mode="bernoulli"``: every value is kept independently with probability ``keep``,
  ``s = 1/keep`` (when nothing is kept the estimate is zero);
- ``mode="fixed"``: a uniform subset of ``ceil(keep·size)`` values, without replacement,
  ``s = size/kept``.

The subset is *sliced out* of every operand of the VJP's tensor network (Π included,
:meth:`~tnconv.TensorNetwork.slice`) before anything is contracted, so the
contraction shrinks with ``keep`` — unlike masking ``v``, which costs the full VJP.

Legs (``leg=``):

===============  ==============================  ===============================================
leg              weight VJP (``x``, ``v``)        input VJP (``weight``, ``v``)
===============  ==============================  ===============================================
``"spatial"``    (sample, tile of rows) units     (sample, tile of rows) units
``"positions"``  output positions jointly         —
``"spatial:d"``  output rows of dim ``d``         output rows of dim ``d``
``"batch"``      samples ``n``                    — (``n`` is an output leg)
``"channel"``    — (an output leg)                output channels within a group (``co``)
``"group"``      — (an output leg)                groups ``g`` (depthwise: output channels)
===============  ==============================  ===============================================

``"spatial"`` (= ``"tiles"``, :mod:`.tiles`) keeps (sample, tile of output rows) units:
the kept slabs of ``x`` (the tiles' rows and their halo) go through PyTorch's own VJP
kernels, so the work is ``keep`` times the exact VJP's; a cost model picks the fewest tiles
that let a draw keep about ``keep`` of the units (one per sample at usual batch sizes).
``"positions"`` samples each of the ``∏O`` output positions jointly (docs/reference.md §6's
estimator). The positions are separate legs ``o_1 … o_D`` of the network, each carried by
its own Π_d, so a joint subset is not a slice of any one of them; what saves work is to
slice the joint leg out of the *windows* ``x·Π_1⋯Π_D``: the kept windows of ``x`` are
gathered (no arithmetic), and the remaining network ``u[n, o, k, g, ci] · v[n, g, co, o]``
(:func:`windows_network`, derived from the VJP network) is sliced on the joint leg ``o``.
``"spatial:d"`` (:mod:`.rows`) keeps output rows of dimension ``d``: their windows are
gathered and stacked along the batch for one call of PyTorch's kernel. docs/randomized.md
gives every estimator's variance and says which to use when.

A slice that no Π carries (``"batch"``, ``"channel"``, ``"group"``) is materialized
(:func:`materialize_slices`): the inputs are sliced and the network shrinks to an ordinary,
smaller VJP network — which the ``"native"`` strategy hands to PyTorch's kernels. Networks
that still hold a draw's indices are contracted with ``cache=False`` by the dispatcher, so
they enter no cache. Modules: :mod:`.sampling` (options and draws), :mod:`.rewrites`
(network rewrites), :mod:`.tiles` and :mod:`.rows` (the structured spatial estimators),
:mod:`.estimators` (the VJPs), :mod:`.training` (the autograd Function behind
``tnconv.randomized.conv`` and the modules' ``backward_keep`` options), :mod:`.ops`
(custom operators for ``torch.compile`` and the random-number semantics: one seed per call,
drawn from ``generator`` or the global generator, so compiled and eager results agree).

Example:
    >>> import torch, tnconv
    >>> x, v = torch.randn(8, 3, 16, 16), torch.randn(8, 4, 14, 14)
    >>> g = torch.Generator().manual_seed(0)
    >>> grad_w = tnconv.randomized.conv_weight_vjp(x, v, 3, keep=0.25, generator=g)
    >>> grad_w.shape
    torch.Size([4, 3, 3, 3])
"""

from ..execute.windows import gather_windows
from .estimators import input_vjp_network, weight_vjp_network

# the public VJPs: the estimators with one seed per call, custom operators while compiling (.ops)
from .ops import conv_input_vjp, conv_transpose_weight_vjp, conv_weight_vjp
from .rewrites import windows_network
from .sampling import MODES, Draw, check_keep, check_leg, check_mode, legs_of, sample
from .tiles import TileLayout, tile_layout
from .training import BackwardOptions, conv, conv_transpose

__all__ = [
    "MODES",
    "BackwardOptions",
    "Draw",
    "TileLayout",
    "check_keep",
    "check_leg",
    "check_mode",
    "conv",
    "conv_input_vjp",
    "conv_transpose",
    "conv_transpose_weight_vjp",
    "conv_weight_vjp",
    "gather_windows",
    "input_vjp_network",
    "legs_of",
    "sample",
    "tile_layout",
    "weight_vjp_network",
    "windows_network",
]
