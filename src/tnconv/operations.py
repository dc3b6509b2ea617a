"""Every operation of SPEC §3 by name, built from one set of hyper-parameters.

:data:`OPERATIONS` maps a name (``"conv"``, ``"weight_vjp"``, ``"kfac_reduce"``, …) to a
function ``Hyperparameters -> TensorNetwork``. The ``tnconv draw`` command, the diagram
gallery and tests use it to reach every network through one door.

>>> net = operation_network("weight_vjp", Hyperparameters(dims=1, kernel_size=3, stride=2))
>>> net.inputs, net.output_shape
(('x', 'v'), (4, 4, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import networks
from .hyperparams import IntOrTuple, Padding, conv_geometry, normalize_tuple
from .network import TensorNetwork


@dataclass(frozen=True)
class Hyperparameters:
    """Shapes and hyper-parameters shared by all operations (PyTorch's meanings).

    Attributes:
        dims: number of spatial dimensions ``D``.
        batch: ``N``.
        channels: ``C_in``.
        out_channels: ``C_out`` (default: ``channels``).
        groups: ``G``.
        input_size: ``I`` per spatial dimension (an int or a ``D``-tuple).
        kernel_size, stride, padding, dilation: as ``torch.nn.functional.conv2d``.
        output_padding: of transposed convolutions.
        vectors: ``M``, the number of vectors of an MJP or columns of a GGN factor.
    """

    dims: int = 2
    batch: int = 2
    channels: int = 4
    out_channels: int | None = None
    groups: int = 1
    input_size: IntOrTuple = 8
    kernel_size: IntOrTuple = 3
    stride: IntOrTuple = 1
    padding: Padding = 0
    dilation: IntOrTuple = 1
    output_padding: IntOrTuple = 0
    vectors: int = 3

    def __post_init__(self) -> None:
        for name in ("dims", "batch", "channels", "groups", "vectors"):
            normalize_tuple(getattr(self, name), 1, name, minimum=1)
        if self.out_channels is not None:
            normalize_tuple(self.out_channels, 1, "out_channels", minimum=1)

    @property
    def c_out(self) -> int:
        return self.channels if self.out_channels is None else self.out_channels

    @property
    def spatial_input(self) -> tuple[int, ...]:
        return normalize_tuple(self.input_size, self.dims, "input_size", minimum=1)

    @property
    def kernel(self) -> tuple[int, ...]:
        return normalize_tuple(self.kernel_size, self.dims, "kernel_size", minimum=1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``[N, C_in, I…]``."""
        return (self.batch, self.channels, *self.spatial_input)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``[C_out, C_in/G, K…]`` (``C_in/G`` rounded down; a mismatch is reported by the builder)."""
        return (self.c_out, max(1, self.channels // self.groups), *self.kernel)

    @property
    def conv_hyperparameters(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}


Builder = Callable[[Hyperparameters], TensorNetwork]


def _conv(h: Hyperparameters) -> TensorNetwork:
    return networks.conv(h.input_shape, h.weight_shape, **h.conv_hyperparameters)


def _output_shape(h: Hyperparameters) -> tuple[int, ...]:
    """``[N, C_out, O…]`` of the convolution (the shape of ``v``)."""
    return _conv(h).output_shape


def _patches(builder: Callable[..., TensorNetwork]) -> Builder:
    """An input-only network of a convolution (KFC, KFAC-reduce)."""
    return lambda h: builder(h.input_shape, h.kernel, **h.conv_hyperparameters)


def _patches_transpose(builder: Callable[..., TensorNetwork]) -> Builder:
    """An input-only network of a transposed convolution (``input_size`` is its input's)."""
    return lambda h: builder(h.input_shape, h.kernel, h.stride, h.padding, h.output_padding, h.dilation, h.groups)


def _with_output(builder: Callable[..., TensorNetwork], vectors: bool = False) -> Builder:
    """A network of ``x`` and a tensor shaped like the output (``v``), or with ``M`` of them (``s``)."""

    def build(h: Hyperparameters) -> TensorNetwork:
        shape = _output_shape(h)
        return builder(h.input_shape, (h.vectors, *shape) if vectors else shape, h.kernel, **h.conv_hyperparameters)

    return build


def _vjp(builder: Callable[..., TensorNetwork], vectors: bool = False) -> Builder:
    """A VJP network (``conv(...).vjp(...)``, built by tnconv.networks), of ``M`` vectors with ``vectors``."""
    return lambda h: builder(
        h.input_shape, h.weight_shape, **h.conv_hyperparameters, batch=h.vectors if vectors else None
    )


def _fold(h: Hyperparameters) -> TensorNetwork:
    """Fold ``u [N, C·∏K, ∏O]`` back to ``[N, C, I…]`` (the adjoint of unfold)."""
    geometry = conv_geometry(h.spatial_input, h.kernel, h.stride, h.padding, h.dilation)
    shape = (h.batch, h.channels * math.prod(h.kernel), math.prod(geometry.output_size))
    return networks.fold(shape, h.spatial_input, h.kernel, h.dilation, h.padding, h.stride)


def _conv_transpose(h: Hyperparameters) -> TensorNetwork:
    """Transposed convolution of ``x [N, C_in, O…]`` with ``w [C_in, C_out/G, K…]``."""
    weight = (h.channels, max(1, h.c_out // h.groups), *h.kernel)
    return networks.conv_transpose(h.input_shape, weight, h.stride, h.padding, h.output_padding, h.groups, h.dilation)


OPERATIONS: dict[str, tuple[str, Builder]] = {
    "conv": ("convolution", _conv),
    "input_vjp": ("input VJP (= transposed convolution of v)", _vjp(networks.conv_input_vjp)),
    "weight_vjp": ("weight VJP", _vjp(networks.conv_weight_vjp)),
    "input_jvp": ("input JVP", lambda h: _conv(h).jvp("x")),
    "weight_jvp": ("weight JVP", lambda h: _conv(h).jvp("w")),
    "input_mjp": ("input VJP of M vectors at once", _vjp(networks.conv_input_vjp, vectors=True)),
    "weight_mjp": ("weight VJP of M vectors at once", _vjp(networks.conv_weight_vjp, vectors=True)),
    "unfold": ("unfold (im2col)", lambda h: networks.unfold(h.input_shape, h.kernel, h.dilation, h.padding, h.stride)),
    "fold": ("fold (col2im)", _fold),
    "conv_transpose": ("transposed convolution", _conv_transpose),
    "unfold_transpose": (
        "unfold of a transposed convolution's input",
        _patches_transpose(lambda x, k, s, p, op, dl, g: networks.unfold_transpose(x, k, s, p, op, dl)),
    ),
    "kfc": ("KFC / KFAC-expand input factor", _patches(networks.kfc)),
    "kfac_reduce": ("KFAC-reduce input factor", _patches(networks.kfac_reduce)),
    "kfc_transpose": ("KFC input factor of a transposed convolution", _patches_transpose(networks.kfc_transpose)),
    "kfac_reduce_transpose": (
        "KFAC-reduce input factor of a transposed convolution",
        _patches_transpose(networks.kfac_reduce_transpose),
    ),
    "per_sample_weight_grad": ("per-sample weight gradients", _with_output(networks.per_sample_weight_grad)),
    "grad_second_moment": ("second moment of the per-sample gradients", _with_output(networks.grad_second_moment)),
    "ggn_diagonal": ("GGN diagonal", _with_output(networks.ggn_diagonal, vectors=True)),
    "ggn_gram": ("GGN Gram matrix", _with_output(networks.ggn_gram, vectors=True)),
}
"""``name -> (one-line description, builder)``, in the order of SPEC §3."""

ALIASES: dict[str, str] = {"mjp": "input_mjp"}
"""Other accepted names."""


def operation_network(name: str, hyperparameters: Hyperparameters | None = None) -> TensorNetwork:
    """The network of operation ``name`` (a key of :data:`OPERATIONS` or :data:`ALIASES`).

    Raises ``ValueError`` naming the available operations if ``name`` is unknown, and the
    builders' ``ValueError``/``TypeError`` for inconsistent hyper-parameters.

    >>> operation_network("kfac_reduce", Hyperparameters(kernel_size=3, stride=2)).output_shape
    (1, 36, 36)
    """
    key = ALIASES.get(name, name)
    if key not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; choose one of: {', '.join(OPERATIONS)}")
    return OPERATIONS[key][1](hyperparameters or Hyperparameters())
