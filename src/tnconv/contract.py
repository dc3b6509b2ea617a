"""Planning and executing the contraction of a :class:`~tnconv.network.TensorNetwork`.

A *plan* is everything about a contraction that does not depend on data: the einsum
equation, the operand recipes and the contraction order found by ``opt_einsum``. Plans
are cached per network (networks are hashable and carry all sizes), so a repeated call
with the same shapes costs a dictionary look-up plus the arithmetic.

Execution strategies are functions ``(network, tensors) -> tensor | None`` registered in
:data:`STRATEGIES`; ``None`` means "this strategy does not apply to this network".
``"einsum"`` (dense index patterns, always applicable) is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import opt_einsum
import torch

from .network import Node, TensorNetwork

Strategy = Callable[[TensorNetwork, Mapping[str, torch.Tensor]], "torch.Tensor | None"]


@dataclass(frozen=True)
class DensePlan:
    """A cached dense-einsum plan of one network.

    Attributes:
        equation: the einsum equation over ``operands``.
        operands: the non-scalar nodes, in equation order.
        scale: the product of the scalar nodes.
        flops: opt_einsum's operation count of the chosen contraction order.
        output_shape: the shape of the result.
    """

    equation: str
    operands: tuple[Node, ...]
    scale: float
    flops: int
    output_shape: tuple[int, ...]
    expression: object


@lru_cache(maxsize=1024)
def dense_plan(network: TensorNetwork) -> DensePlan:
    """The (cached) dense contraction plan of ``network``."""
    operands = tuple(node for node in network.nodes if node.kind != "scalar")
    scale = 1.0
    for node in network.nodes:
        if node.kind == "scalar":
            scale *= node.value
    equation = network.equation()
    shapes = tuple(tuple(network.size(leg) for leg in node.legs) for node in operands)
    flops, expression = compiled_expression(equation, shapes)
    return DensePlan(equation, operands, scale, flops, network.output_shape, expression)


@lru_cache(maxsize=1024)
def compiled_expression(equation: str, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, object]:
    """Contraction order and compiled ``opt_einsum`` expression of ``equation`` on ``shapes``.

    Cached apart from :func:`dense_plan` because networks that differ only in *which*
    positions a leg is sliced to (one per draw of a randomized VJP) share it.

    >>> compiled_expression("ab,bc->ac", ((2, 3), (3, 4)))[0]
    48
    """
    path, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize="auto")
    return int(info.opt_cost), opt_einsum.contract_expression(equation, *shapes, optimize=path)


@lru_cache(maxsize=4096)
def contiguous_start(kept: tuple[int, ...]) -> int | None:
    """The first index if ``kept`` is a run ``a, a+1, …`` (a slice that is a view), else ``None``."""
    start = kept[0]
    return start if kept == tuple(range(start, start + len(kept))) else None


def _slice_legs(tensor: torch.Tensor, legs: tuple[str, ...], slices: Mapping[str, tuple[int, ...]]) -> torch.Tensor:
    for axis, leg in enumerate(legs):
        kept = slices.get(leg)
        if kept is None:
            continue
        start = contiguous_start(kept)
        if start is not None:  # a run of positions (trimmed inputs): a view, no copy
            tensor = tensor.narrow(axis, start, len(kept))
        else:
            tensor = tensor.index_select(axis, torch.tensor(kept, device=tensor.device))
    return tensor


def dense_operand(
    network: TensorNetwork, node: Node, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The dense tensor of ``node`` with one dimension per leg, sliced as the network says."""
    full = network.size_of
    if node.kind == "input":
        tensor = tensors[node.key].reshape([full[leg] for leg in node.legs])
    elif node.kind == "pattern":
        tensor = node.pattern.materialize(dtype, device)  # type: ignore[union-attr]
    elif node.kind == "identity":
        tensor = torch.eye(full[node.legs[0]], dtype=dtype, device=device)
    elif node.kind == "ones":
        tensor = torch.ones(full[node.legs[0]], dtype=dtype, device=device)
    elif node.kind == "constant":
        tensor = constant_value(node.network, dtype, device)  # type: ignore[arg-type]
    else:
        raise ValueError(f"node {node.name!r} of kind {node.kind!r} has no dense operand")
    return _slice_legs(tensor, node.legs, dict(network.slices))


@lru_cache(maxsize=256)
def constant_value(network: TensorNetwork, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The dense value of a data-independent network (cached; do not modify it)."""
    return evaluate_dense(network, {}, dtype, device).reshape([network.size(leg) for leg in network.output_legs])


def contract_einsum(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Reference strategy: materialise every pattern densely and run the planned einsum."""
    first = next(iter(tensors.values()))
    return evaluate_dense(network, tensors, first.dtype, first.device)


def evaluate_dense(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Contract ``network`` with every non-input node as a dense tensor."""
    plan = dense_plan(network)
    operands = [dense_operand(network, node, tensors, dtype, device) for node in plan.operands]
    result = plan.expression(*operands, backend="torch")  # type: ignore[operator]
    result = result.reshape(plan.output_shape)
    return result * plan.scale if plan.scale != 1.0 else result


def contract_simplified(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Strategy ``"simplified"``: the dense einsum of the simplified network (always applies)."""
    return contract_einsum(network.simplify(), tensors)


def _strategies() -> dict[str, Strategy]:
    from .native import contract_native
    from .structured import contract_structured

    return {
        "native": contract_native,
        "structured": contract_structured,
        "simplified": contract_simplified,
        "einsum": contract_einsum,
    }


STRATEGIES: dict[str, Strategy] = _strategies()
#: Order in which ``strategy="auto"`` tries the strategies; the first that applies wins.
AUTO_ORDER: list[str] = ["native", "structured", "simplified"]


@lru_cache(maxsize=1024)
def _input_shapes(network: TensorNetwork) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((name, network.input_shape(name)) for name in network.inputs)


def check_inputs(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise ``TypeError``/``ValueError`` naming the input whose tensor does not fit."""
    shapes = _input_shapes(network)
    if len(shapes) == len(tensors):
        try:
            ref = tensors[shapes[0][0]]
            if all(
                tensors[name].shape == shape and tensors[name].dtype == ref.dtype and tensors[name].device == ref.device
                for name, shape in shapes
            ):
                return
        except (KeyError, AttributeError):
            pass
    names = network.inputs
    missing = [name for name in names if name not in tensors]
    unknown = [name for name in tensors if name not in names]
    if missing or unknown:
        raise TypeError(f"network inputs are {list(names)}; missing {missing}, unexpected {unknown}")
    first_name = names[0]
    for name in names:
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        expected = network.input_shape(name)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")
        ref = tensors[first_name]
        if tensor.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but {first_name} has dtype {ref.dtype}")
        if tensor.device != ref.device:
            raise ValueError(f"{name} is on device {tensor.device} but {first_name} is on {ref.device}")


def contract(network: TensorNetwork, tensors: Mapping[str, torch.Tensor], strategy: str = "auto") -> torch.Tensor:
    """Evaluate ``network`` on ``tensors`` with the given execution strategy."""
    check_inputs(network, tensors)
    if strategy == "auto":
        for name in AUTO_ORDER:
            result = STRATEGIES[name](network, tensors)
            if result is not None:
                return result
        raise RuntimeError("no execution strategy applies")  # unreachable: einsum always applies
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, got {strategy!r}")
    result = STRATEGIES[strategy](network, tensors)
    if result is None:
        raise ValueError(f"strategy={strategy!r} does not apply to this network")
    return result
