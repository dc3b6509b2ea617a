"""Normalising and validating convolution hyper-parameters.

This is the one module that rejects bad hyper-parameters. Every public function of
tnconv funnels its ``stride``, ``padding``, ``dilation``, ``groups`` and sizes through
here, so the error messages are the same everywhere and always name the argument.

Example:
    >>> geometry = conv_geometry((32, 32), (3, 3), stride=2, padding=1)
    >>> geometry.output_size
    (16, 16)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IntOrTuple = int | Sequence[int]
Padding = int | Sequence[int] | str

PADDING_STRINGS = ("same", "valid")


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    return int(value)


def normalize_tuple(value: IntOrTuple, dims: int, name: str, minimum: int | None = None) -> tuple[int, ...]:
    """Turn an int or a ``dims``-sequence into a ``dims``-tuple of ints.

    Raises ``TypeError`` for non-integers and ``ValueError`` for a wrong length or a value
    below ``minimum``; both messages name ``name`` and quote ``value``.

    >>> normalize_tuple(2, 3, "stride", minimum=1)
    (2, 2, 2)
    """
    if isinstance(value, (Sequence, torch.Size)) and not isinstance(value, str):
        items = tuple(_as_int(v, name) for v in value)
        if len(items) != dims:
            raise ValueError(
                f"{name} must be an int or a tuple of {dims} ints (one per spatial dimension), "
                f"got {tuple(value)!r} of length {len(items)}"
            )
    else:
        items = (_as_int(value, name),) * dims
    if minimum is not None and any(v < minimum for v in items):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return items


def normalize_padding(
    padding: Padding,
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(left, right)`` padding per spatial dimension.

    Accepts an int, a tuple of ints (symmetric), or ``'valid'``/``'same'`` as PyTorch does:
    ``'same'`` requires stride 1 and puts ``total // 2`` on the left, the rest on the right,
    with ``total = dilation * (kernel_size - 1)``.
    """
    dims = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            zeros = (0,) * dims
            return zeros, zeros
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' requires stride 1, got stride={stride!r}")
            total = tuple(d * (k - 1) for k, d in zip(kernel_size, dilation))
            left = tuple(t // 2 for t in total)
            return left, tuple(t - p for t, p in zip(total, left))
        raise ValueError(f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
    symmetric = normalize_tuple(padding, dims, "padding", minimum=0)
    return symmetric, symmetric


def normalize_groups(groups: object, in_channels: int, out_channels: int | None = None) -> int:
    """Validate ``groups`` against the channel counts; return it as an int."""
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
    if out_channels is not None and out_channels % groups:
        raise ValueError(f"out_channels={out_channels} is not divisible by groups={groups}")
    return groups


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
        """One :class:`~tnconv.pattern.IndexPattern` per spatial dimension."""
        from .pattern import IndexPattern

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


def check_tensor(value: object, name: str, min_dim: int | None = None) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if min_dim is not None and value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}")
    return value


def check_same_dtype_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``TypeError``/``ValueError`` if the given tensors differ in dtype or device."""
    items = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on device {t.device} but {first_name} is on device {first.device}")


def conv_transpose_geometry(
    input_size: IntOrTuple,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    dims: int | None = None,
) -> ConvGeometry:
    """Geometry of the convolution whose transpose a transposed convolution is (SPEC §3).

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
