"""The N-d convolution as a tensor network (docs/reference.md §3, first row).

``y[n, (g co), o] = Σ x[n, (g ci), i] · Π[i, o, k] · w[(g co), ci, k]``, with one index
pattern per spatial dimension; the leg-naming helpers here are shared by every builder.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...caching import cached
from ...spec.convspec import ConvSpec
from ...spec.geometry import ConvGeometry
from ...spec.validation import IntOrTuple, Padding
from ..network import Axes, Node, TensorNetwork


def spatial_legs(prefix: str, dims: int) -> tuple[str, ...]:
    """Leg names ``prefix1 … prefixD`` of one spatial family (``i``, ``o`` or ``k``)."""
    return tuple(f"{prefix}{d + 1}" for d in range(dims))


def pattern_nodes(
    geometry: ConvGeometry, input_prefix: str = "i", output_prefix: str = "o", kernel_prefix: str = "k"
) -> tuple[Node, ...]:
    """One ``"pattern"`` node ``Π_d[i_d, o_d, k_d]`` per spatial dimension."""
    dims = geometry.dims
    return tuple(
        Node(f"pi{d + 1}", "pattern", ((i,), (o,), (k,)), pattern=p)
        for d, (i, o, k, p) in enumerate(
            zip(
                spatial_legs(input_prefix, dims),
                spatial_legs(output_prefix, dims),
                spatial_legs(kernel_prefix, dims),
                geometry.patterns(),
            )
        )
    )


def pattern_sizes(geometry: ConvGeometry) -> dict[str, int]:
    """Sizes of the legs ``i_d``, ``o_d``, ``k_d``."""
    dims = geometry.dims
    sizes: dict[str, int] = {}
    for prefix, values in (("i", geometry.input_size), ("o", geometry.output_size), ("k", geometry.kernel_size)):
        sizes.update(zip(spatial_legs(prefix, dims), values))
    return sizes


@cached(maxsize=4096)
def conv_network_of(spec: ConvSpec) -> TensorNetwork:
    """The network of the (forward) convolution ``spec``: inputs ``x`` and ``w``.

    >>> conv_network_of(ConvSpec.conv((1, 4, 5), (6, 2, 3), groups=2)).equation()
    'abcd,def,bgcf->abge'
    """
    geometry = spec.geometry
    dims = geometry.dims
    i, o, k = spatial_legs("i", dims), spatial_legs("o", dims), spatial_legs("k", dims)
    single = lambda legs: tuple((leg,) for leg in legs)  # noqa: E731
    x_axes: Axes = (("n",), ("g", "ci")) + single(i)
    w_axes: Axes = (("g", "co"), ("ci",)) + single(k)
    out: Axes = (("n",), ("g", "co")) + single(o)
    sizes = {"n": spec.batch, "g": spec.groups, "ci": spec.in_per_group, "co": spec.out_per_group}
    sizes.update(pattern_sizes(geometry))
    nodes = (Node("x", "input", x_axes),) + pattern_nodes(geometry) + (Node("w", "input", w_axes),)
    return TensorNetwork(nodes, tuple(sizes.items()), out)


@cached(maxsize=4096)
def conv_network(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> TensorNetwork:
    """The convolution's tensor network (inputs ``x`` and ``w``), for any number of dims.

    Args:
        input_shape: ``[N, C_in, I_1, …, I_D]``.
        weight_shape: ``[C_out, C_in/G, K_1, …, K_D]``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d``.

    Returns:
        A network with output ``[N, C_out, O_1, …, O_D]``.

    >>> tn = conv_network((1, 4, 5, 5), (6, 2, 3, 3), groups=2)
    >>> tn.output_shape
    (1, 6, 3, 3)
    """
    return conv_network_of(ConvSpec.conv(input_shape, weight_shape, stride, padding, dilation, groups))
