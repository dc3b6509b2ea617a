"""The dispatcher: every evaluation of a network in tnconv goes through :func:`contract`.

Execution strategies are registered with :func:`register_strategy`: a function
``(network, tensors) -> tensor | None`` (``None``: "does not apply to this network"), a
one-line description, and whether ``strategy="auto"`` tries it. ``"auto"`` tries the
registered strategies in the order of their ``priority`` (lowest first) and the first that
applies wins. A strategy that can fuse a bias into its kernel registers with
``fuses_bias=True`` and is then called with a ``bias`` keyword; for every other one the
dispatcher adds the bias over the result's axis 1.

Networks that hold the indices of one random draw are contracted with ``cache=False``: the
per-network caches of simplification and planning are bypassed (see
:func:`tnconv.caching.bypass`); caches keyed by shapes alone still serve.

A new strategy is one module with its function and one call of :func:`register_strategy`
(plus its import in :mod:`tnconv.execute`).

>>> import torch, tnconv
>>> tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
>>> x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
>>> torch.allclose(contract(tn, {"x": x, "w": w}), contract(tn, {"x": x, "w": w}, strategy="einsum"), atol=1e-5)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..caching import bypass, bypassing, memo
from ..symbolic.network import TensorNetwork, register_extension

Run = Callable[..., "torch.Tensor | None"]


@dataclass(frozen=True)
class Strategy:
    """A registered execution strategy."""

    name: str
    run: Run
    description: str
    auto: bool
    fuses_bias: bool
    priority: int
    bind: Callable[[TensorNetwork], Callable[..., torch.Tensor] | None] | None = None

    def runner(self, network: TensorNetwork) -> Callable[..., torch.Tensor | None]:
        """``(tensors, bias) -> result`` of this strategy on ``network`` (bound once, see ``bind``)."""
        bound = self.bind(network) if self.bind is not None else None
        if bound is not None:
            if self.fuses_bias:
                return bound
            return lambda tensors, bias: add_bias(bound(tensors, None), bias)
        return lambda tensors, bias: _run(self, network, tensors, bias)


_REGISTRY: dict[str, Strategy] = {}
#: ``network -> runner`` of the strategy that ``"auto"`` found for it: whether a strategy
#: applies depends on the network alone (never on the data), so a repeated call runs it
#: after one look-up.
_AUTO = memo("tnconv.execute.dispatch.auto_choice", 4096)
#: Bumped by every :func:`register_strategy`: a runner from :func:`bind` re-resolves when it
#: sees a newer generation (as ``_AUTO`` is emptied then).
_GENERATION = [0]
#: ``name -> run`` of every registered strategy, in ``"auto"`` order (read-only by convention).
STRATEGIES: dict[str, Run] = {}


def register_strategy(
    name: str,
    run: Run,
    description: str = "",
    *,
    auto: bool = True,
    priority: int = 100,
    fuses_bias: bool = False,
    bind: Callable[[TensorNetwork], Callable[..., torch.Tensor] | None] | None = None,
) -> Strategy:
    """Register (or replace) the execution strategy ``name``.

    Args:
        name: the value users pass as ``strategy=``.
        run: ``(network, tensors) -> tensor | None`` (with ``fuses_bias``:
            ``(network, tensors, bias=None)``); it must return ``None`` when it does not apply,
            and whether it applies must depend on the network only (``"auto"`` remembers,
            per network, the strategy that applied).
        description: one line for ``tnconv.execute.strategies()`` and the docs.
        auto: tried by ``strategy="auto"``.
        priority: ``"auto"`` tries lower priorities first (ties: registration order).
        fuses_bias: ``run`` takes ``bias`` and adds it itself.
        bind: optional ``network -> runner``: the strategy's data-free preparation for one
            network (e.g. the recognised kernel call), returning ``runner(tensors, bias)``
            (``bias`` is ``None`` unless ``fuses_bias``). ``"auto"`` keeps the runner of
            every network it has seen, so a repeated call skips the look-ups of ``run``.
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"strategy name must be a non-empty string other than 'auto', got {name!r}")
    if not callable(run):
        raise TypeError(f"run must be callable, got {type(run).__name__}")
    strategy = Strategy(name, run, description, auto, fuses_bias, priority, bind)
    _REGISTRY.pop(name, None)
    items = sorted([*_REGISTRY.items(), (name, strategy)], key=lambda item: item[1].priority)
    _REGISTRY.clear()
    _REGISTRY.update(items)
    STRATEGIES.clear()
    STRATEGIES.update((key, value.run) for key, value in items)
    _AUTO.clear()
    _GENERATION[0] += 1
    return strategy


def strategies() -> dict[str, str]:
    """``name -> description`` of every registered strategy, in ``"auto"`` order."""
    return {name: s.description for name, s in _REGISTRY.items()}


def auto_order() -> list[str]:
    """The strategies ``strategy="auto"`` tries, in order."""
    return [name for name, s in _REGISTRY.items() if s.auto]


def known_finite(tensor: torch.Tensor) -> bool:
    """``True`` when every entry of ``tensor`` is finite, read with one ``sum`` (an overflow
    reads as non-finite: callers then take their exact path, which is harmless); ``False``
    also where no value can be read (inside ``torch.func`` transforms)."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return False
    return math.isfinite(tensor.detach().sum())


def check_inputs(network: TensorNetwork, tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise ``TypeError``/``ValueError`` naming the input whose tensor does not fit."""
    shapes = network.input_shapes
    if len(shapes) == len(tensors):
        try:
            ref = tensors[shapes[0][0]]
            dtype, device = ref.dtype, ref.device
            for name, shape in shapes:
                t = tensors[name]
                if t.shape != shape or t.dtype != dtype or (t is not ref and t.device != device):
                    break
            else:
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


def add_bias(result: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``result + bias`` broadcast over axis 1 (the channels of ``[N, C, …]``)."""
    if bias is None:
        return result
    return result + bias.view((1, -1) + (1,) * (result.dim() - 2))


def _run(strategy: Strategy, network: TensorNetwork, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None):  # type: ignore[no-untyped-def]
    if strategy.fuses_bias:
        return strategy.run(network, tensors, bias=bias)
    result = strategy.run(network, tensors)
    return None if result is None else add_bias(result, bias)


def _auto(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None
) -> tuple[torch.Tensor, Callable[..., torch.Tensor | None]]:
    """``strategy="auto"`` on checked ``tensors``: the result and the runner that gave it
    (remembered per network outside :func:`~tnconv.caching.bypass`)."""
    remember = not bypassing()
    if remember:
        found, runner = _AUTO.get(network)
        if found:
            result = runner(tensors, bias)  # type: ignore[operator]
            if result is not None:
                return result, runner  # type: ignore[return-value]
    for candidate in _REGISTRY.values():
        if candidate.auto:
            result = _run(candidate, network, tensors, bias)
            if result is not None:
                runner = candidate.runner(network)
                if remember:
                    _AUTO.put(network, runner)
                return result, runner  # type: ignore[return-value]
    raise RuntimeError("no execution strategy applies")  # unreachable: "simplified" always applies


def bind(
    network: TensorNetwork, checked: tuple[tuple[str, tuple[int, ...]], ...] | None = None
) -> Callable[..., torch.Tensor]:
    """``runner(tensors, bias=None)``: ``contract(network, tensors, bias=bias)`` with the work
    that depends on the network alone done once — the runner of ``"auto"`` is resolved on
    the first call and kept (re-resolved after a :func:`register_strategy`), so a repeated
    call is the strategy's tensor work only. For composite runners and front-ends that call
    one network many times.

    Args:
        network: the network.
        checked: ``(name, shape)`` pairs the caller has already validated its tensors against
            (e.g. ``parent.input_shapes`` of a network with the same inputs, or the shape a
            front-end keyed its plan on); when they cover every input of ``network`` the
            runner skips :func:`check_inputs`, otherwise it checks on every call.

    >>> import torch, tnconv
    >>> tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
    >>> run = bind(tn)
    >>> x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
    >>> torch.equal(run({"x": x, "w": w}), contract(tn, {"x": x, "w": w}))
    True
    """
    check = checked is None or not set(network.input_shapes) <= set(checked)
    state: list = [-1, None]  # generation, runner

    def runner(tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None = None) -> torch.Tensor:
        if check:
            check_inputs(network, tensors)
        if state[0] == _GENERATION[0]:
            result = state[1](tensors, bias)
            if result is not None:
                return result
        generation = _GENERATION[0]
        result, found = _auto(network, tensors, bias)
        if not bypassing():
            state[0], state[1] = generation, found
        return result

    return runner


def contract(
    network: TensorNetwork,
    tensors: Mapping[str, torch.Tensor],
    strategy: str = "auto",
    *,
    bias: torch.Tensor | None = None,
    cache: bool = True,
) -> torch.Tensor:
    """Evaluate ``network`` on ``tensors`` (one per input name), plus ``bias`` over axis 1.

    Args:
        network: the network.
        tensors: ``{input name: tensor}``, shaped as ``network.input_shape(name)``.
        strategy: ``"auto"`` or a registered strategy's name.
        bias: ``[C]`` added over the result's axis 1 (fused into the kernel where the
            strategy can), or ``None``.
        cache: ``False`` for networks holding one draw's indices (bypasses per-network caches).
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string ('auto' or a registered strategy), got {strategy!r}")
    if not cache:
        with bypass():
            return contract(network, tensors, strategy, bias=bias)
    check_inputs(network, tensors)
    if strategy == "auto":
        return _auto(network, tensors, bias)[0]
    chosen = _REGISTRY.get(strategy) if isinstance(strategy, str) else None
    if chosen is None:
        raise ValueError(f"strategy must be 'auto' or one of {sorted(_REGISTRY)}, got {strategy!r}")
    result = _run(chosen, network, tensors, bias)
    if result is None:
        raise ValueError(f"strategy={strategy!r} does not apply to this network")
    return result


def _contract_method(
    network: TensorNetwork, tensors: Mapping[str, torch.Tensor], strategy: str = "auto"
) -> torch.Tensor:
    return contract(network, tensors, strategy)


register_extension("contract", _contract_method)
