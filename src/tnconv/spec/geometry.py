"""The geometry of a convolution: output sizes and the padding split, per spatial dimension.

Example:
    >>> geometry = conv_geometry((32, 32), (3, 3), stride=2, padding=1)
    >>> geometry.output_size
    (16, 16)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from .pattern import IndexPattern
from .validation import IntOrTuple, Padding, normalize_padding, normalize_tuple


def output_size(
    input_size: int, kernel_size: int, stride: int, padding_left: int, padding_right: int, dilation: int
) -> int:
    """``⌊(I + P_l + P_r − Dl·(K−1) − 1) / S⌋ + 1`` (may be ≤ 0; callers reject that)."""
    return (input_size + padding_left + padding_right - dilation * (kernel_size - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvGeometry:
    """The spatial hyper-parameters of one convolution, normalised, one entry per dimension.

    ``input_size`` is ``I``, ``output_size`` is ``O``; padding is split into left/right.
    """

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding_left: tuple[int, ...]
    padding_right: tuple[int, ...]
    output_size: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.input_size)

    def patterns(self) -> tuple:
        """One :class:`~tnconv.spec.IndexPattern` per spatial dimension."""
        return tuple(
            IndexPattern(i, o, k, s, dl, p)
            for i, o, k, s, dl, p in zip(
                self.input_size, self.output_size, self.kernel_size, self.stride, self.dilation, self.padding_left
            )
        )


def conv_geometry(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    dims: int | None = None,
) -> ConvGeometry:
    """Validate the spatial hyper-parameters of a convolution and compute its output size.

    ``dims`` is the number of spatial dimensions; by default the length of ``input_size``
    (or 1 when it is an int).

    >>> conv_geometry(5, 3, padding="same").output_size
    (5,)
    """
    if dims is None:
        dims = 1 if isinstance(input_size, numbers.Integral) else len(input_size)  # type: ignore[arg-type]
    sizes = normalize_tuple(input_size, dims, "input_size", minimum=1)
    kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    strides = normalize_tuple(stride, dims, "stride", minimum=1)
    dilations = normalize_tuple(dilation, dims, "dilation", minimum=1)
    left, right = normalize_padding(padding, kernel, strides, dilations)
    out = tuple(output_size(*args) for args in zip(sizes, kernel, strides, left, right, dilations))
    if any(o <= 0 for o in out):
        raise ValueError(
            f"kernel_size={kernel} with dilation={dilations} is larger than the padded input "
            f"(input_size={sizes}, padding={padding!r}): output size would be {out}"
        )
    return ConvGeometry(sizes, kernel, strides, dilations, left, right, out)


def conv_transpose_geometry(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    dims: int | None = None,
) -> ConvGeometry:
    """Geometry of the convolution whose transpose a transposed convolution is (docs/reference.md §3).

    A transposed convolution maps ``O`` positions (its ``input_size``) to
    ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``. The returned geometry is that of
    the forward convolution from ``I'`` to ``O``: ``input_size`` is ``I'``, ``output_size``
    is ``O``, ``padding_left`` is ``P`` and ``padding_right`` is ``P − output_padding``
    (so that the output-size formula gives exactly ``O``).

    >>> conv_transpose_geometry(4, 3, stride=2, padding=1, output_padding=1).input_size
    (8,)
    """
    if dims is None:
        dims = 1 if isinstance(input_size, numbers.Integral) else len(input_size)  # type: ignore[arg-type]
    sizes = normalize_tuple(input_size, dims, "input_size", minimum=1)
    kernel = normalize_tuple(kernel_size, dims, "kernel_size", minimum=1)
    strides = normalize_tuple(stride, dims, "stride", minimum=1)
    dilations = normalize_tuple(dilation, dims, "dilation", minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be an int or a tuple of ints, got {padding!r}")
    pads = normalize_tuple(padding, dims, "padding", minimum=0)
    extra = normalize_tuple(output_padding, dims, "output_padding", minimum=0)
    for op, s, dl in zip(extra, strides, dilations):
        if op >= s and op >= dl:
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation, got output_padding={extra}, "
                f"stride={strides}, dilation={dilations}"
            )
    full = tuple(
        (o - 1) * s - 2 * p + dl * (k - 1) + op + 1
        for o, s, p, dl, k, op in zip(sizes, strides, pads, dilations, kernel, extra)
    )
    if any(i <= 0 for i in full):
        raise ValueError(
            f"transposed convolution output size would be {full} (input_size={sizes}, kernel_size={kernel}, "
            f"stride={strides}, padding={pads}, dilation={dilations}, output_padding={extra})"
        )
    right = tuple(p - op for p, op in zip(pads, extra))
    return ConvGeometry(full, kernel, strides, dilations, pads, right, sizes)


def pattern_of(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
) -> IndexPattern:
    """The symbolic :class:`IndexPattern` of a 1-D convolution, validated."""
    (pattern,) = conv_geometry(input_size, kernel_size, stride, padding, dilation, dims=1).patterns()
    return pattern
