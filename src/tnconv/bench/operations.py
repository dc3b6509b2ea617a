"""The benchmarks: for operations of the one registry, tnconv's implementation and its baselines.

An :class:`Operation` knows which cases it applies to and builds, for one case, the
zero-argument callables to time: ``"tnconv"`` and the baselines (``"torch"``, docs/reference.md §7's
reference, and ``"einconv"`` when that package is installed). Operations whose tnconv
function does not exist in the installed version are reported as unavailable, so the
registry can name functions that land later. :func:`register` adds an operation.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

from ..symbolic.registry import OPERATIONS as REGISTRY
from .cases import Case

Thunk = Callable[[], torch.Tensor]
Setup = Callable[[Case, int, torch.dtype, torch.device], dict[str, Thunk]]
BASELINES = ("torch", "einconv")


@dataclass(frozen=True)
class Operation:
    """One benchmarked operation.

    Attributes:
        name: the name used by ``--ops``.
        description: one line for help texts and tables.
        function: the (dotted) attribute of ``tnconv`` that implements it (checked for
            availability), e.g. ``"conv"`` or ``"randomized.conv_weight_vjp"``.
        applies: whether the operation makes sense for a case.
        setup: ``(case, batch, dtype, device) -> {implementation: thunk}``; builds the inputs
            once and returns only the implementations that apply to the case.
        default: part of the run when ``--ops`` is not given.
        estimator: tnconv returns a random estimate of the baseline's value, so the two are
            not expected to agree (no "disagree" note).
        measures: the operation of the one registry (:data:`tnconv.symbolic.registry.OPERATIONS`)
            that this benchmark times; by default its own name.
        floors: like ``setup``, the floors of the operation (names ``floor:…``, see
            :func:`factor_floors`), timed alongside and reported as ratios.
        canonical: ``(case, baseline output) -> tensor`` laid out like tnconv's, applied
            (untimed) before the two are compared — for a baseline that computes the same
            numbers in another order (the flipped taps of an unfold of the dilated input).
    """

    name: str
    description: str
    function: str
    applies: Callable[[Case], bool]
    setup: Setup
    default: bool = True
    estimator: bool = False
    measures: str = ""
    floors: Setup | None = None
    canonical: Callable[[Case, torch.Tensor], torch.Tensor] | None = None

    def available(self) -> bool:
        """Whether the installed tnconv has the function."""
        target: object = importlib.import_module("tnconv")
        for part in self.function.split("."):
            target = getattr(target, part, None)
        return callable(target)

    @property
    def family(self) -> str:
        """The name before ``@`` (``randomized_weight_vjp`` for ``randomized_weight_vjp@0.5``)."""
        return self.name.split("@")[0]


OPERATIONS: dict[str, Operation] = {}


def register(operation: Operation) -> Operation:
    """Add (or replace) a benchmark; it must time an operation of the one registry."""
    measures = operation.measures or operation.family
    if measures not in REGISTRY:
        raise ValueError(f"benchmark {operation.name!r} measures {measures!r}, which is not in tnconv's registry")
    OPERATIONS[operation.name] = operation
    return operation


@cache
def einconv_module(name: str = "") -> object | None:
    """``einconv`` (or ``einconv.<name>``) if installed, else ``None``."""
    if importlib.util.find_spec("einconv") is None:
        return None
    return importlib.import_module("einconv" + (f".{name}" if name else ""))


def _tnconv(name: str) -> Callable:
    import tnconv

    return getattr(tnconv, name)


def _randn(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, device=device)


def _einsum_expression(module: str, *args: object, **kwargs: object) -> torch.Tensor:
    """Evaluate one of einconv's ``einsum_expression`` builders, as einconv's own functionals do."""
    equation, operands, shape = einconv_module(f"expressions.{module}").einsum_expression(*args, **kwargs)  # type: ignore[union-attr]
    return torch.einsum(equation, *operands).reshape(shape)


def _hyper(case: Case) -> dict[str, object]:
    return {"stride": case.stride, "padding": case.padding, "dilation": case.dilation, "groups": case.groups}


def _forward_tensors(case: Case, batch: int, dtype: torch.dtype, device: torch.device):  # type: ignore[no-untyped-def]
    x = _randn((batch, *case.input_shape[1:]), dtype, device)
    w = _randn(case.weight_shape(), dtype, device)
    b = _randn((case.out_channels,), dtype, device) if case.bias else None
    return x, w, b


def _output_shape(case: Case, batch: int) -> tuple[int, ...]:
    return (batch, case.out_channels, *case.output_spatial_size())


def _torch_d(template: str, case: Case) -> Callable | None:
    """The torch function ``template.format(d=D)`` (e.g. ``"torch.nn.grad.conv{d}d_input"``), or
    ``None`` where torch has none (``D > 3``)."""
    if case.dims > 3:
        return None
    module, _, name = template.format(d=case.dims).rpartition(".")
    return getattr(importlib.import_module(module), name)


def _keep(impls: dict[str, Thunk | None]) -> dict[str, Thunk]:
    return {name: thunk for name, thunk in impls.items() if thunk is not None}


# --- forward -------------------------------------------------------------------------------


def _setup_fwd(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x, w, b = _forward_tensors(case, batch, dtype, device)
    hyper = _hyper(case)
    torch_conv = _torch_d("torch.nn.functional.conv{d}d", case)
    einconv = einconv_module("functionals")
    return _keep(
        {
            "tnconv": lambda: _tnconv("conv")(x, w, b, **hyper),
            "torch": (lambda: torch_conv(x, w, b, **hyper)) if torch_conv else None,
            "einconv": (lambda: einconv.convNd(x, w, b, **hyper)) if einconv else None,  # type: ignore[attr-defined]
        }
    )


def _setup_train_step(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    """Forward and backward of one convolution with every operand requiring grad (a
    training step of the layer, per-call overhead included); the thunk returns the weight
    gradient, so the two implementations are compared on it."""
    hyper = _hyper(case)
    torch_conv = _torch_d("torch.nn.functional.conv{d}d", case)
    leaves = [t.requires_grad_() if t is not None else None for t in _forward_tensors(case, batch, dtype, device)]
    x, w, b = leaves
    v = _randn(_output_shape(case, batch), dtype, device)

    def step(conv: Callable) -> Thunk:
        def run() -> torch.Tensor:
            for t in leaves:
                if t is not None:
                    t.grad = None
            with torch.enable_grad():  # (the benchmark runs under no_grad)
                conv(x, w, b, **hyper).backward(v)
            return w.grad  # type: ignore[return-value]

        return run

    return _keep({"tnconv": step(_tnconv("conv")), "torch": step(torch_conv) if torch_conv else None})


def loop_of_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int = 1,
) -> torch.Tensor:
    """A ``D ≥ 4`` convolution as a Python loop of ``conv3d`` over the leading kernel dims.

    The baseline of docs/reference.md §7 for convolutions PyTorch does not have: for every offset of the
    kernel in the first ``D − 3`` dimensions, the matching (strided) slab of the padded
    input is folded into the batch and convolved in 3-d with that slice of the kernel.

    >>> x, w = torch.randn(2, 4, 5, 5, 5, 5), torch.randn(6, 2, 3, 3, 3, 3)
    >>> loop_of_conv3d(x, w, None, (1,) * 4, (1,) * 4, (1,) * 4, groups=2).shape
    torch.Size([2, 6, 5, 5, 5, 5])
    """
    lead = x.dim() - 5
    if lead < 1:
        raise ValueError(f"loop_of_conv3d needs at least 4 spatial dimensions, got input shape {tuple(x.shape)}")
    pads = [0] * 6 + [p for d in reversed(range(lead)) for p in (padding[d], padding[d])]
    x = F.pad(x, pads)
    batch, channels = x.shape[:2]
    kernel = weight.shape[2 : 2 + lead]
    out_lead = [
        (x.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(lead)
    ]  # padding already applied
    y = None
    for offsets in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None), slice(None)]
        index += [
            slice(k * dl, k * dl + (o - 1) * s + 1, s) for k, dl, o, s in zip(offsets, dilation, out_lead, stride)
        ]
        slab = x[tuple(index)]  # [N, C, O_1..O_lead, I_a, I_b, I_c]
        slab = slab.movedim(1, 1 + lead).reshape(-1, channels, *x.shape[-3:])
        tap = weight[(slice(None), slice(None), *offsets)]
        term = F.conv3d(slab, tap, None, stride[lead:], padding[lead:], dilation[lead:], groups)
        y = term if y is None else y.add_(term)
    assert y is not None
    y = y.reshape(batch, *out_lead, *y.shape[1:]).movedim(1 + lead, 1)
    if bias is not None:
        y = y + bias.view(1, -1, *([1] * (y.dim() - 2)))
    return y


def _setup_conv4d(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x, w, b = _forward_tensors(case, batch, dtype, device)
    hyper = _hyper(case)
    einconv = einconv_module("functionals")
    return _keep(
        {
            "tnconv": lambda: _tnconv("conv")(x, w, b, **hyper),
            "torch": lambda: loop_of_conv3d(x, w, b, case.stride, case.padding, case.dilation, case.groups),
            "einconv": (lambda: einconv.convNd(x, w, b, **hyper)) if einconv else None,  # type: ignore[attr-defined]
        }
    )


# --- VJPs ------------------------------------------------------------------------------------


def _setup_input_vjp(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    w = _randn(case.weight_shape(), dtype, device)
    v = _randn(_output_shape(case, batch), dtype, device)
    hyper = _hyper(case)
    full_shape, spatial = (batch, *case.input_shape[1:]), case.spatial_size
    torch_vjp = _torch_d("torch.nn.grad.conv{d}d_input", case)
    has_einconv = einconv_module() is not None
    return _keep(
        {
            "tnconv": lambda: _tnconv("conv_input_vjp")(w, v, spatial, **hyper),
            "torch": (lambda: torch_vjp(full_shape, w, v, **hyper)) if torch_vjp else None,
            "einconv": (lambda: _einsum_expression("convNd_input_vjp", w, v, spatial, **hyper))
            if has_einconv
            else None,
        }
    )


def _setup_weight_vjp(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x = _randn((batch, *case.input_shape[1:]), dtype, device)
    v = _randn(_output_shape(case, batch), dtype, device)
    hyper = _hyper(case)
    weight_shape = case.weight_shape()
    torch_vjp = _torch_d("torch.nn.grad.conv{d}d_weight", case)
    has_einconv = einconv_module() is not None
    return _keep(
        {
            "tnconv": lambda: _tnconv("conv_weight_vjp")(x, v, case.kernel_size, **hyper),
            "torch": (lambda: torch_vjp(x, weight_shape, v, **hyper)) if torch_vjp else None,
            "einconv": (lambda: _einsum_expression("convNd_weight_vjp", x, v, case.kernel_size, **hyper))
            if has_einconv
            else None,
        }
    )


# --- unfold and Kronecker factors -----------------------------------------------------------


def _setup_unfold(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x = _randn((batch, *case.input_shape[1:]), dtype, device)
    args = (case.kernel_size, case.dilation, case.padding, case.stride)
    einconv = einconv_module("functionals")
    return _keep(
        {
            "tnconv": lambda: _tnconv("unfold")(x, *args),
            "torch": (lambda: F.unfold(x, *args)) if case.dims == 2 else None,
            "einconv": (lambda: einconv.unfoldNd(x, *args)) if einconv else None,  # type: ignore[attr-defined]
        }
    )


def unfold_factor(x: torch.Tensor, case: Case, reduce: bool) -> torch.Tensor:
    """KFC (``reduce=False``) or KFAC-reduce input factor via ``torch.nn.functional.unfold``.

    The pre-tensor-network recipe (BackPACK, ASDL, singd): unfold the input to
    ``[N, C·K, O]``, split the channels into groups, then one batched matrix product per
    group — after averaging over the output positions for KFAC-reduce. The unfolded tensor
    is the same for the whole input as for each group separately, so it is built once
    (a Python loop over e.g. 960 depthwise groups would make the baseline needlessly slow).
    Returns ``[G, Ci·∏K, Ci·∏K]``.

    >>> case = Case("m", "l", (1, 4, 6, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), groups=2)
    >>> unfold_factor(torch.randn(3, 4, 6, 6), case, reduce=True).shape
    torch.Size([2, 18, 18])
    """
    batch, groups = x.shape[0], case.groups
    u = F.unfold(x, case.kernel_size, case.dilation, case.padding, case.stride)
    u = u.view(batch, groups, u.shape[1] // groups, u.shape[2])
    if reduce:
        mean = u.mean(dim=3).transpose(0, 1)  # [G, N, Ci·K]
        return mean.transpose(1, 2) @ mean / batch
    columns = u.permute(1, 2, 0, 3).reshape(groups, u.shape[2], -1)  # [G, Ci·K, N·O]
    return columns @ columns.transpose(1, 2) / batch


#: Implementations whose name starts with this are floors: lower bounds on the time of an
#: operation (docs/reference.md §7), timed with the others but not compared for agreement.
FLOOR = "floor:"


def is_floor(name: str) -> bool:
    """Whether an implementation name is a floor (``floor:read``, ``floor:gemm``, …)."""
    return name.startswith(FLOOR)


def factor_floors(x: torch.Tensor, case: Case, reduce: bool) -> dict[str, Thunk]:
    """The floors of a Kronecker factor on ``x`` (docs/reference.md §7), each a thunk.

    ``floor:read`` is one pass over ``x`` (``x.sum()``); ``floor:gemm`` the final product
    alone on a ready operand — ``J Jᵀ`` with ``J`` the ``[G, d, N·∏O]`` unfolded input (KFC),
    ``ū ūᵀ`` with ``ū`` ``[G, d, N]`` (KFAC-reduce), whose floor is ``floor:read+gemm``.

    >>> case = Case("m", "l", (1, 4, 6, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), groups=2)
    >>> sorted(factor_floors(torch.randn(2, 4, 6, 6), case, reduce=True))
    ['floor:gemm', 'floor:read', 'floor:read+gemm']
    """
    import tnconv

    batch, groups = x.shape[0], case.groups
    u = tnconv.unfold(x, case.kernel_size, case.dilation, case.padding, case.stride)  # [N, C·∏K, ∏O]
    u = u.view(batch, groups, u.shape[1] // groups, u.shape[2])
    floors: dict[str, Thunk] = {f"{FLOOR}read": lambda: x.sum()}
    if reduce:
        mean = u.mean(3).permute(1, 2, 0).contiguous()  # [G, d, N]
        floors[f"{FLOOR}gemm"] = lambda: torch.bmm(mean, mean.transpose(1, 2))
        floors[f"{FLOOR}read+gemm"] = lambda: (x.sum(), torch.bmm(mean, mean.transpose(1, 2)))[1]
    else:
        columns = u.permute(1, 2, 0, 3).reshape(groups, u.shape[2], -1).contiguous()  # [G, d, N·O]
        floors[f"{FLOOR}gemm"] = lambda: torch.bmm(columns, columns.transpose(1, 2))
    del u
    return floors


def _setup_factor(reduce: bool) -> Setup:
    function, module = ("kfac_reduce_factor", "convNd_kfac_reduce") if reduce else ("kfc_factor", "convNd_kfc")

    def setup(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
        x = _randn((batch, *case.input_shape[1:]), dtype, device)
        hyper = _hyper(case)
        has_einconv = einconv_module() is not None
        return _keep(
            {
                "tnconv": lambda: _tnconv(function)(x, case.kernel_size, **hyper),
                "torch": (lambda: unfold_factor(x, case, reduce)) if case.dims == 2 else None,
                "einconv": (lambda: _einsum_expression(module, x, case.kernel_size, **hyper)) if has_einconv else None,
            }
        )

    return setup


def _setup_factor_floors(reduce: bool) -> Setup:
    def setup(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
        return factor_floors(_randn((batch, *case.input_shape[1:]), dtype, device), case, reduce)

    return setup


# --- transposed convolution -----------------------------------------------------------------


def _setup_conv_transpose(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x, w, b = _forward_tensors(case, batch, dtype, device)
    args = (case.stride, case.padding, case.output_padding, case.groups, case.dilation)
    torch_transpose = _torch_d("torch.nn.functional.conv_transpose{d}d", case)
    return _keep(
        {
            "tnconv": lambda: _tnconv("conv_transpose")(x, w, b, *args),
            "torch": (lambda: torch_transpose(x, w, b, *args)) if torch_transpose else None,
        }
    )


# --- fold and the unfold of a transposed convolution's input -----------------------------


def _setup_fold(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    taps, blocks = math.prod(case.kernel_size), math.prod(case.output_spatial_size())
    u = _randn((batch, case.in_channels * taps, blocks), dtype, device)
    args = (case.spatial_size, case.kernel_size, case.dilation, case.padding, case.stride)
    return _keep(
        {
            "tnconv": lambda: _tnconv("fold")(u, *args),
            "torch": (lambda: F.fold(u, *args)) if case.dims == 2 else None,
        }
    )


def unfold_of_dilated(x: torch.Tensor, case: Case) -> torch.Tensor:
    """The unfold of a transposed convolution's input the torch way: insert ``S − 1`` zeros
    between the input positions, pad by ``Dl·(K−1) − P`` (plus ``output_padding`` on the
    right), then ``torch.nn.functional.unfold`` with stride 1 (2-d). Its taps come in the
    reverse order of tnconv's ``unfold_transpose`` (see :func:`flip_taps`).

    >>> case = Case("m", "l", (1, 2, 3, 3), 4, (3, 3), (2, 2), (1, 1), (1, 1), transposed=True,
    ...             output_padding=(1, 1))
    >>> unfold_of_dilated(torch.randn(1, 2, 3, 3), case).shape
    torch.Size([1, 18, 36])
    """
    batch, channels, *size = x.shape
    dilated = x.new_zeros(batch, channels, *((o - 1) * s + 1 for o, s in zip(size, case.stride)))
    dilated[(slice(None), slice(None), *(slice(None, None, s) for s in case.stride))] = x
    widths: list[int] = []
    extra = case.output_padding or (0,) * case.dims
    for k, dl, p, op in reversed(list(zip(case.kernel_size, case.dilation, case.padding, extra))):
        reach = dl * (k - 1) - p
        widths += [reach, reach + op]
    return F.unfold(F.pad(dilated, widths), case.kernel_size, case.dilation, 0, 1)


def flip_taps(case: Case, u: torch.Tensor) -> torch.Tensor:
    """``[N, C·∏K, L]`` with every kernel axis reversed (tap ``k`` ↔ ``K − 1 − k``)."""
    batch, rows, blocks = u.shape
    grid = u.reshape(batch, rows // math.prod(case.kernel_size), *case.kernel_size, blocks)
    return grid.flip(tuple(range(2, 2 + case.dims))).reshape(u.shape)


def _setup_unfold_transpose(case: Case, batch: int, dtype: torch.dtype, device: torch.device) -> dict[str, Thunk]:
    x = _randn((batch, *case.input_shape[1:]), dtype, device)
    args = (case.kernel_size, case.stride, case.padding, case.output_padding or 0, case.dilation)
    return _keep(
        {
            "tnconv": lambda: _tnconv("unfold_transpose")(x, *args),
            "torch": (lambda: unfold_of_dilated(x, case)) if case.dims == 2 else None,
        }
    )


def _plain(case: Case) -> bool:
    return not case.transposed and case.dims <= 3


for _operation in (
    Operation("fwd", "forward convolution", "conv", _plain, _setup_fwd, measures="conv"),
    Operation(
        "train_step",
        "forward + backward of the layer, input, weight and bias requiring grad",
        "conv",
        _plain,
        _setup_train_step,
        default=False,
        measures="conv",
    ),
    Operation("input_vjp", "input VJP (gradient w.r.t. the input)", "conv_input_vjp", _plain, _setup_input_vjp),
    Operation("weight_vjp", "weight VJP (gradient w.r.t. the weight)", "conv_weight_vjp", _plain, _setup_weight_vjp),
    Operation("unfold", "unfold (im2col)", "unfold", _plain, _setup_unfold),
    Operation(
        "kfc", "KFC input factor", "kfc_factor", _plain, _setup_factor(False), floors=_setup_factor_floors(False)
    ),
    Operation(
        "kfac_reduce",
        "KFAC-reduce input factor",
        "kfac_reduce_factor",
        _plain,
        _setup_factor(True),
        floors=_setup_factor_floors(True),
    ),
    Operation(
        "conv_transpose", "transposed convolution", "conv_transpose", lambda c: c.transposed, _setup_conv_transpose
    ),
    Operation("fold", "fold (col2im), the adjoint of unfold", "fold", _plain, _setup_fold),
    Operation(
        "unfold_transpose",
        "unfold of a transposed convolution's input (vs unfold of the dilated input)",
        "unfold_transpose",
        lambda c: c.transposed and c.dims <= 3,
        _setup_unfold_transpose,
        canonical=flip_taps,
    ),
    Operation(
        "conv4d",
        "forward convolution, D >= 4",
        "conv",
        lambda c: not c.transposed and c.dims >= 4,
        _setup_conv4d,
        measures="conv",
    ),
):
    register(_operation)


def parse_ops(text: str | None) -> list[Operation]:
    """The operations named in a comma-separated list (the default ones for ``None``).

    A family name stands for all its members (``randomized_weight_vjp`` for
    ``randomized_weight_vjp@1``, ``@0.5``, …).

    >>> [op.name for op in parse_ops("fwd,kfc")]
    ['fwd', 'kfc']
    >>> [op.name for op in parse_ops("randomized_weight_vjp")][:2]
    ['randomized_weight_vjp@1', 'randomized_weight_vjp@0.5']
    """
    if text is None:
        return [op for op in OPERATIONS.values() if op.default]
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--ops: no operation named in {text!r}")
    chosen: dict[str, Operation] = {}
    for name in names:
        members = [op for op in OPERATIONS.values() if name in (op.name, op.family)]
        if not members:
            families = ", ".join(dict.fromkeys(op.family for op in OPERATIONS.values()))
            raise ValueError(f"--ops: unknown operation {name!r} (available: {families})")
        chosen.update((op.name, op) for op in members)
    return list(chosen.values())
