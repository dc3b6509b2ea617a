"""Validation of user input: the one module that rejects bad arguments.

Every public function of tnconv funnels its tensors, ``stride``, ``padding``, ``dilation``,
``groups``, sizes and options through here, so that one mistake gets one message
everywhere, and the message names the argument and quotes the value.

The rule for the error type: a value of the wrong *type* (a float or a bool where an int
is expected, a list where a tensor is expected, a generator that is no
``torch.Generator``) raises ``TypeError``; a value of the right type that is out of range
or inconsistent with the others (a negative stride, a wrong length, mismatched shapes, an
unknown option) raises ``ValueError``.

>>> normalize_tuple(2, 3, "stride", minimum=1)
(2, 2, 2)
>>> normalize_tuple(2.0, 2, "stride")
Traceback (most recent call last):
...
TypeError: stride must be an int or a tuple of ints, got 2.0
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

IntOrTuple = int | Sequence[int]
Padding = int | Sequence[int] | str

PADDING_STRINGS = ("same", "valid")


def as_int(value: object, name: str) -> int:
    """``value`` as an int; ``TypeError`` naming ``name`` for a bool, float or other non-integer."""
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
        items = tuple(as_int(v, name) for v in value)
        if len(items) != dims:
            raise ValueError(
                f"{name} must be an int or a tuple of {dims} ints (one per spatial dimension), "
                f"got {tuple(value)!r} of length {len(items)}"
            )
    else:
        items = (as_int(value, name),) * dims
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
    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
    if out_channels is not None and out_channels % groups:
        raise ValueError(f"out_channels={out_channels} is not divisible by groups={groups}")
    return groups


def check_tensor(value: object, name: str, min_dim: int | None = None) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if min_dim is not None and value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}")
    return value


#: dtypes without a convolution: torch has no kernel for them (``complex32``: torch's support
#: is experimental and forward-only, tnconv's matrix products have none).
UNSUPPORTED_DTYPES = {
    getattr(torch, name): why
    for names, why in [
        (("bool",), "which torch's convolutions do not support either"),
        (("uint16", "uint32", "uint64"), "which torch's convolutions do not support either"),
        (
            ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"),
            "which torch's convolutions do not support either (scaled matrix products only)",
        ),
        (("complex32",), "which tnconv does not support (torch's is experimental): use torch.complex64"),
    ]
    for name in names
    if hasattr(torch, name)
}


def check_same_dtype_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``TypeError``/``ValueError`` if the given tensors differ in dtype or device, or
    one is no tensor, or has a dtype no convolution exists for (:data:`UNSUPPORTED_DTYPES`)."""
    first = None
    for t in tensors.values():  # the common case in a few comparisons (front-ends call this per call)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            break
        if first is None:
            first = t
            if t.dtype in UNSUPPORTED_DTYPES:
                break
        elif t.dtype != first.dtype or t.device != first.device:
            break
    else:
        if first is not None:
            return
    items = [(name, t) for name, t in tensors.items() if t is not None]
    for name, t in items:
        check_tensor(t, name)
        if t.dtype in UNSUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}, {UNSUPPORTED_DTYPES[t.dtype]}")
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on device {t.device} but {first_name} is on device {first.device}")


def check_data_pair(x: object, other: object, other_name: str) -> None:
    """``x`` is a ``[N, C, spatial…]`` tensor and ``other`` a tensor of its dtype and device."""
    check_tensor(x, "x", min_dim=3)
    check_tensor(other, other_name)
    check_same_dtype_device(x=x, **{other_name: other})  # type: ignore[arg-type]


def check_bias(bias: torch.Tensor | None, channels: int) -> None:
    """``bias`` is ``None`` or a ``[channels]`` tensor."""
    if bias is not None:
        check_tensor(bias, "bias")
        if tuple(bias.shape) != (channels,):
            raise ValueError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")


def check_floating(tensor: torch.Tensor, name: str) -> None:
    """``TypeError`` unless ``tensor`` has a floating-point dtype."""
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_dims(
    tensor: object, dims: int, name: str = "input", function: str = "", unbatched: bool = False
) -> torch.Tensor:
    """``tensor`` is a tensor with exactly ``dims + 2`` dimensions (``[N, C, spatial…]``), or
    ``dims + 1`` (unbatched ``[C, spatial…]``) when ``unbatched``."""
    check_tensor(tensor, name)
    allowed = (dims + 1, dims + 2) if unbatched else (dims + 2,)
    if tensor.dim() not in allowed:  # type: ignore[union-attr]
        where = f" of {function}" if function else ""
        alternative = f" (or {dims + 1}, unbatched)" if unbatched else ""
        raise ValueError(
            f"{name}{where} must have {dims + 2} dimensions{alternative}, got shape {tuple(tensor.shape)}"  # type: ignore[union-attr]
        )
    return tensor  # type: ignore[return-value]


def check_probability(value: object, name: str) -> float:
    """``value`` as a float in ``(0, 1]`` (a kept fraction); ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {value!r}")
    result = float(value)
    if not 0.0 < result <= 1.0:  # (NaN fails the comparison; no math.isnan: a compiled keep may be symbolic)
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return result


def check_choice(value: object, choices: Sequence[str], name: str) -> str:
    """``value`` is one of ``choices``; ``ValueError`` naming ``name`` and the choices otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_generator(generator: object, device: torch.device | None = None, name: str = "generator") -> None:
    """``generator`` is ``None`` or a ``torch.Generator`` (on ``device``'s type, when given)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if device is not None and generator.device.type != device.type:
        raise ValueError(f"{name} is on device {generator.device} but the tensors are on {device}")


def shape_tuple(value: object, name: str) -> tuple[int, ...]:
    """A shape (tuple, list or ``torch.Size`` of ints) as a tuple; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Size)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    return tuple(as_int(v, name) for v in value)
