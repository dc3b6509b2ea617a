"""The N-d transposed convolution as a tensor network (docs/reference.md §3).

It is the input VJP of the convolution that maps ``I'`` to ``O``, with ``x`` as the vector:
``x[n, (g ci), o] Π[i, o, k] w[(g ci), co, k] → [n, (g co), i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...caching import cached
from ...spec.convspec import ConvSpec
from ...spec.validation import IntOrTuple
from ..derive import merge_identities
from ..network import TensorNetwork
from .conv import conv_network_of


@cached(maxsize=1024)
def conv_transpose_network_of(spec: ConvSpec) -> TensorNetwork:
    """The network of the transposed convolution ``spec`` (``spec.transposed`` must be true)."""
    if not spec.transposed:
        raise ValueError("conv_transpose_network_of needs a transposed ConvSpec (ConvSpec.conv_transpose)")
    # the convolution I' -> O has C_out (transposed) input and C_in (transposed) output channels
    forward = ConvSpec(spec.batch, spec.out_channels, spec.in_channels, spec.groups, spec.geometry)
    return merge_identities(conv_network_of(forward).vjp("x", vector="x")).rename({"ci": "co", "co": "ci"})


@cached(maxsize=4096)
def conv_transpose_network(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> TensorNetwork:
    """The transposed convolution's network (inputs ``x`` and ``w``), any number of dims.

    Args:
        input_shape: ``[N, C_in, O_1, …, O_D]``.
        weight_shape: ``[C_in, C_out/groups, K_1, …, K_D]`` (PyTorch's layout).
        stride, padding, output_padding, groups, dilation: as
            ``torch.nn.functional.conv_transpose2d``.

    Returns:
        A network with output ``[N, C_out, I'_1, …, I'_D]``,
        ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``.

    >>> tn = conv_transpose_network((1, 4, 3), (4, 2, 3), stride=2, groups=2)
    >>> print(tn)
    TensorNetwork: abc,defc,gdeb->gdfa
      pi1        pattern  [i1, o1, k1] IndexPattern(input_size=7, output_size=3, kernel_size=3, stride=2, ...)
      w          input    [(g ci), co, k1]
      x          input    [n, (g ci), o1]
      legs: i1=7(a), o1=3(b), k1=3(c), g=2(d), ci=2(e), co=2(f), n=1(g)
      output: [n, (g co), i1]
    """
    spec = ConvSpec.conv_transpose(input_shape, weight_shape, stride, padding, output_padding, groups, dilation)
    return conv_transpose_network_of(spec)
