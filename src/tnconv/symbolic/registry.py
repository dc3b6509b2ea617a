"""The one registry of operations: every network of docs/reference.md §3 by name, from a ``ConvSpec``.

:data:`OPERATIONS` maps a name (``"conv"``, ``"weight_vjp"``, ``"kfac_reduce"``, …) to an
:class:`Operation`: a description and a builder ``(spec, vectors) -> TensorNetwork``. The
``tnconv draw`` command, the diagram gallery, the benchmark (whose measurements each name
the operation they time) and the tests reach every network through it. A new operation is
its builder in :mod:`tnconv.symbolic.builders` plus one :func:`register_operation` call.

>>> net = operation_network("weight_vjp", ConvSpec.create(dims=1, kernel_size=3, stride=2))
>>> net.inputs, net.output_shape
(('x', 'v'), (4, 4, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..spec.convspec import ConvSpec
from ..spec.validation import as_int
from .builders.conv import conv_network_of
from .builders.curvature import factor_network
from .builders.ggn import ggn_diagonal_of, ggn_gram_of
from .builders.gradients import grad_second_moment_of, per_sample_of
from .builders.transpose import conv_transpose_network_of
from .builders.unfold import fold_of, patches_network
from .derive import vjp_network
from .network import TensorNetwork

Builder = Callable[[ConvSpec, int], TensorNetwork]


@dataclass(frozen=True)
class Operation:
    """One operation of the registry.

    Attributes:
        name: its key.
        description: one line for help texts, tables and the gallery.
        build: ``(spec, vectors) -> network``; ``vectors`` is ``M`` of MJPs and GGN factors.
        transposed: whether it belongs to a transposed convolution (then it is built from
            the transposed spec with the same layer keywords, :meth:`ConvSpec.toggled`).
    """

    name: str
    description: str
    build: Builder
    transposed: bool = False


OPERATIONS: dict[str, Operation] = {}
ALIASES: dict[str, str] = {"mjp": "input_mjp"}
"""Other accepted names."""


def register_operation(name: str, description: str, build: Builder, *, transposed: bool = False) -> Operation:
    """Add (or replace) the operation ``name``."""
    operation = Operation(name, description, build, transposed)
    OPERATIONS[name] = operation
    return operation


def operation_network(name: str, spec: ConvSpec | None = None, vectors: int = 3) -> TensorNetwork:
    """The network of operation ``name`` (a key of :data:`OPERATIONS` or :data:`ALIASES`).

    ``spec`` defaults to ``ConvSpec.create()``; ``vectors`` is ``M``. Raises ``ValueError``
    naming the available operations if ``name`` is unknown.

    >>> operation_network("kfac_reduce", ConvSpec.create(kernel_size=3, stride=2)).output_shape
    (1, 36, 36)
    """
    key = ALIASES.get(name, name)
    if key not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; choose one of: {', '.join(OPERATIONS)}")
    spec = ConvSpec.create() if spec is None else spec
    if not isinstance(spec, ConvSpec):
        raise TypeError(f"spec must be a tnconv.spec.ConvSpec, got {type(spec).__name__}")
    vectors = as_int(vectors, "vectors")
    if vectors < 1:
        raise ValueError(f"vectors must be positive, got {vectors!r}")
    operation = OPERATIONS[key]
    if spec.transposed != operation.transposed:
        spec = spec.toggled()
    return operation.build(spec, vectors)


def _patches(spec: ConvSpec, grouped: bool = True) -> TensorNetwork:
    return patches_network(
        spec.batch, spec.in_channels, spec.geometry, spec.transposed, spec.groups if grouped else None
    )


for _name, _description, _build, _transposed in (
    ("conv", "convolution", lambda s, m: conv_network_of(s), False),
    (
        "input_vjp",
        "input VJP (= transposed convolution of v)",
        lambda s, m: vjp_network(conv_network_of(s), "x")[0],
        False,
    ),
    ("weight_vjp", "weight VJP", lambda s, m: vjp_network(conv_network_of(s), "w")[0], False),
    ("input_jvp", "input JVP", lambda s, m: conv_network_of(s).jvp("x"), False),
    ("weight_jvp", "weight JVP", lambda s, m: conv_network_of(s).jvp("w"), False),
    ("input_mjp", "input VJP of M vectors at once", lambda s, m: vjp_network(conv_network_of(s), "x", m)[0], False),
    ("weight_mjp", "weight VJP of M vectors at once", lambda s, m: vjp_network(conv_network_of(s), "w", m)[0], False),
    ("unfold", "unfold (im2col)", lambda s, m: _patches(s, grouped=False), False),
    ("fold", "fold (col2im)", lambda s, m: fold_of(_patches(s, grouped=False)), False),
    ("conv_transpose", "transposed convolution", lambda s, m: conv_transpose_network_of(s), True),
    ("unfold_transpose", "unfold of a transposed convolution's input", lambda s, m: _patches(s, grouped=False), True),
    ("kfc", "KFC / KFAC-expand input factor", lambda s, m: factor_network(_patches(s), "expand"), False),
    ("kfac_reduce", "KFAC-reduce input factor", lambda s, m: factor_network(_patches(s), "reduce"), False),
    (
        "kfc_transpose",
        "KFC input factor of a transposed convolution",
        lambda s, m: factor_network(_patches(s), "expand"),
        True,
    ),
    (
        "kfac_reduce_transpose",
        "KFAC-reduce input factor of a transposed convolution",
        lambda s, m: factor_network(_patches(s), "reduce"),
        True,
    ),
    ("per_sample_weight_grad", "per-sample weight gradients", lambda s, m: per_sample_of(conv_network_of(s)), False),
    (
        "grad_second_moment",
        "second moment of the per-sample gradients",
        lambda s, m: grad_second_moment_of(conv_network_of(s)),
        False,
    ),
    ("ggn_diagonal", "GGN diagonal", lambda s, m: ggn_diagonal_of(conv_network_of(s), m), False),
    ("ggn_gram", "GGN Gram matrix", lambda s, m: ggn_gram_of(conv_network_of(s), m), False),
):
    register_operation(_name, _description, _build, transposed=_transposed)

__all__ = ["ALIASES", "OPERATIONS", "Operation", "operation_network", "register_operation"]
