"""Autograd through tensor networks: every derivative is the contraction of a derived network.

:func:`contract` evaluates a network like :meth:`TensorNetwork.contract`, but as one
``torch.autograd.Function`` whose backward contracts the network's VJP networks
(``network.vjp(name)``, docs/reference.md §4) and whose forward-mode derivative contracts its JVP
networks. The backward itself goes through :func:`contract` again, so higher derivatives
are tensor networks too. The derived networks are cached per network.

Derived networks only get their identities merged here: the other rewrite rules (trimming,
reshaping non-overlapping windows, …) change legs, and deriving again from such a form
would describe a restricted tensor. The execution strategies apply the full
:meth:`~TensorNetwork.simplify` when contracting.

Example:
    >>> import torch, tnconv
    >>> tn = tnconv.networks.conv((2, 3, 8), (4, 3, 3))
    >>> x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    >>> w = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    >>> torch.autograd.gradcheck(lambda x, w: contract(tn, x=x, w=w), (x, w))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad

from ..symbolic.derive import jvp_network, vjp_network
from ..symbolic.network import TensorNetwork
from .dispatch import _GENERATION, STRATEGIES, add_bias, auto_order, bind, check_inputs
from .dispatch import contract as dispatch
from .native import NativeCall, contract_native, joint_backward, joint_backward_call, torch_autograd_call


def _save(ctx: Any, network: TensorNetwork, strategy: str, tensors: tuple[torch.Tensor, ...]) -> None:
    ctx.network, ctx.strategy = network, strategy
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _readers(network: TensorNetwork, key: str) -> list[str]:
    """The input nodes that read tensor ``key`` (several for ``x·x'``, see ``Node.source``)."""
    return [node.name for node in network.nodes if node.kind == "input" and node.key == key]


def _contract_derived(
    derived: TensorNetwork, strategy: str, tensors: dict[str, torch.Tensor], name: str, value: torch.Tensor
) -> torch.Tensor:
    operands = {key: tensors[key] for key in derived.inputs if key != name}
    return contract(derived, strategy, **operands, **{name: value})


def _bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """The gradient of a bias added over axis 1 (see :func:`~.dispatch.add_bias`)."""
    return grad.sum([0, *range(2, grad.dim())])


def _gradients(
    ctx: Any, grad: torch.Tensor, needs: tuple[bool, ...], bias_needed: bool = False
) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
    """The gradients of the network's inputs (``needs`` per input) and of a bias over axis 1."""
    network: TensorNetwork = ctx.network
    tensors = dict(zip(network.inputs, ctx.saved_tensors))
    complex_ = any(t.is_complex() for t in tensors.values())
    if ctx.strategy == "auto" and not complex_ and not torch.is_grad_enabled() and sum(needs) + bias_needed >= 2:
        # a first-order backward of a native convolution: all its gradients in one kernel call,
        # as torch.nn.Conv*d's backward (higher orders keep the derived networks below)
        call = joint_backward_call(network)
        if call is not None:
            x_key, w_key = call.operands
            wanted = dict(zip(network.inputs, needs))
            mask = (wanted[x_key], wanted[w_key], bias_needed)
            gx, gw, gb = joint_backward(call, grad, tensors[x_key], tensors[w_key], mask)
            by_key = {x_key: gx, w_key: gw}
            return [by_key[key] for key in network.inputs], gb
    if complex_:
        # torch's convention for complex inputs: grad = Jᴴ·v, the VJP of the conjugated network
        tensors = {key: t.conj().resolve_conj() if t.is_complex() else t for key, t in tensors.items()}
    grads: list[torch.Tensor | None] = []
    # product rule: a tensor read by several nodes gets the sum of one VJP per node
    for key, needed in zip(network.inputs, needs):
        total = None
        for reader in _readers(network, key) if needed else ():
            derived, vector = vjp_network(network, reader)
            term = _contract_derived(derived, ctx.strategy, tensors, vector, grad)
            total = term if total is None else total + term
        grads.append(total)
    return grads, (_bias_grad(grad) if bias_needed else None)


def _backward(ctx: Any, grad: torch.Tensor) -> tuple:
    grads, _ = _gradients(ctx, grad, ctx.needs_input_grad[2:])
    return (None, None, *grads)


def _tangent(ctx: Any, tangents: tuple[torch.Tensor | None, ...]) -> torch.Tensor | None:
    # the network is multilinear in its nodes: the JVP is a sum of one network per reading node
    network: TensorNetwork = ctx.network
    tensors = dict(zip(network.inputs, ctx.saved_tensors))
    total = None
    for key, tangent in zip(network.inputs, tangents):
        for reader in _readers(network, key) if tangent is not None else ():
            derived, tangent_name = jvp_network(network, reader)
            term = _contract_derived(derived, ctx.strategy, tensors, tangent_name, tangent)  # type: ignore[arg-type]
            total = term if total is None else total + term
    return total


def _jvp(ctx: Any, _network: None, _strategy: None, *tangents: torch.Tensor | None) -> torch.Tensor:
    return _tangent(ctx, tangents)  # type: ignore[return-value]


def _owned(result: torch.Tensor) -> torch.Tensor:
    """``result``, copied when it is a view of a strategy's buffer (``col2im`` crops its padded
    buffer): a Function's output must own its memory for forward-mode AD to give its tangent
    the same layout."""
    return result if result._base is None else result.clone(memory_format=torch.contiguous_format)


class _Contraction(torch.autograd.Function):
    """``network.contract(**tensors)`` with derivatives from the derived networks.

    Old-style (``ctx`` in ``forward``): ``apply`` then skips the per-call signature binding
    that a ``setup_context`` function costs; :class:`_TransformableContraction` is the same
    function for ``torch.func`` transforms, which need ``setup_context``.
    """

    @staticmethod
    def forward(ctx: Any, network: TensorNetwork, strategy: str, *tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        _save(ctx, network, strategy, tensors)
        result = dispatch(network, dict(zip(network.inputs, tensors)), strategy)
        return _owned(result) if forward_ad._current_level >= 0 else result

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


class _BiasedContraction(torch.autograd.Function):
    """:class:`_Contraction` plus a bias over the result's axis 1 (``[C]``), fused into the
    strategy's kernel where it can be; its gradient is the sum of the output gradient, or,
    for a native convolution, comes from the same kernel call as the others."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, network: TensorNetwork, strategy: str, bias: torch.Tensor, *tensors: torch.Tensor
    ) -> torch.Tensor:
        _save(ctx, network, strategy, tensors)
        result = dispatch(network, dict(zip(network.inputs, tensors)), strategy, bias=bias)
        return _owned(result) if forward_ad._current_level >= 0 else result

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        grads, bias_grad = _gradients(ctx, grad, ctx.needs_input_grad[3:], ctx.needs_input_grad[2])
        return (None, None, bias_grad, *grads)

    @staticmethod
    def jvp(  # type: ignore[override]
        ctx: Any, _network: None, _strategy: None, bias: torch.Tensor | None, *tangents: torch.Tensor | None
    ) -> torch.Tensor:
        total = _tangent(ctx, tangents)
        if bias is None:
            return total  # type: ignore[return-value]
        if total is None:
            total = bias.new_zeros(ctx.network.output_shape)
        return add_bias(total, bias)


class _TransformableContraction(torch.autograd.Function):
    """:class:`_Contraction` for ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``, …)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(network: TensorNetwork, strategy: str, *tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _owned(dispatch(network, dict(zip(network.inputs, tensors)), strategy))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        network, strategy, *tensors = inputs
        _save(ctx, network, strategy, tuple(tensors))

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def complex_safe(strategy: str, tensors: Iterable[torch.Tensor | None]) -> str:
    """``strategy``, or under ``"auto"`` the einsum-based strategy that handles what torch's
    kernels do not: ``"simplified"`` for complex tensors (torch's ``convolution_backward``
    has no complex kernel on CPU), ``"einsum"`` for empty tensors (a size-0 leg cannot be
    reshaped by the strided strategies)."""
    if strategy != "auto":
        return strategy
    for t in tensors:  # the common case in one pass: nothing empty, nothing complex
        if t is not None and (t.is_complex() or not t.numel()):
            break
    else:
        return strategy
    present = [t for t in tensors if t is not None]
    if any(t.numel() == 0 for t in present):
        return "einsum"
    if any(t.is_complex() for t in present):
        return "simplified"
    return strategy


def contract(network: TensorNetwork, strategy: str = "auto", **tensors: torch.Tensor) -> torch.Tensor:
    """Evaluate ``network`` on ``tensors``, differentiable by tensor networks.

    Same result as ``network.contract(strategy=strategy, **tensors)``; under autograd the
    gradient w.r.t. each input is the contraction of ``network.vjp(name)``
    (and forward-mode derivatives contract ``network.jvp(name)``), with the same
    ``strategy``. ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``) work too.

    >>> import torch, tnconv
    >>> tn = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
    >>> x = torch.randn(1, 2, 5, requires_grad=True)
    >>> contract(tn, x=x, w=torch.randn(3, 2, 3)).sum().backward()
    >>> x.grad.shape
    torch.Size([1, 2, 5])
    """
    names = network.inputs
    if len(tensors) != len(names) or any(name not in tensors for name in names):
        check_inputs(network, tensors)  # raises, naming what is missing or unexpected
    operands = [tensors[name] for name in names]
    strategy = complex_safe(strategy, operands)
    if needs_autograd(*operands):
        native = _torch_differentiable(network, strategy, tensors)
        if native is not None:
            return native(tensors, None)
        if _transforms_active():
            return _TransformableContraction.apply(network, strategy, *operands)
        return _Contraction.apply(network, strategy, *operands)
    return dispatch(network, tensors, strategy)  # nothing to differentiate: skip the Function


def contract_with_bias(
    network: TensorNetwork, strategy: str, bias: torch.Tensor | None, **tensors: torch.Tensor
) -> torch.Tensor:
    """``network``'s value plus ``bias`` over its channel axis (axis 1), differentiable.

    Gradients flow through the network's own VJPs (the bias gradient is torch's sum). When
    nothing needs a derivative, the dispatcher gets the bias, and a strategy that can fuses
    it into its kernel instead of costing another pass over the output.
    """
    if bias is None:
        return contract(network, strategy, **tensors)
    if not needs_autograd(bias, *tensors.values()):
        return dispatch(network, tensors, complex_safe(strategy, tensors.values()), bias=bias)
    safe = complex_safe(strategy, [*tensors.values(), bias])
    native = _torch_differentiable(network, safe, tensors)
    if native is not None:
        return native(tensors, bias)
    if _transforms_active() or set(tensors) != set(network.inputs):
        return add_bias(contract(network, strategy, **tensors), bias)
    return _BiasedContraction.apply(network, safe, bias, *[tensors[name] for name in network.inputs])


def _torch_differentiable(network: TensorNetwork, strategy: str, tensors: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """The runner of ``network`` to differentiate by torch's autograd (see
    :func:`~tnconv.execute.native.torch_autograd_call`: its derivatives would be torch's own
    kernel calls anyway), or ``None``: only under ``"auto"`` (after :func:`complex_safe`)."""
    call = torch_autograd_call(network) if strategy == "auto" else None
    if not _hands_over(call, tensors):
        return None
    check_inputs(network, tensors)
    return call.runner  # type: ignore[union-attr]


def _hands_over(call: NativeCall | None, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether a call :func:`~tnconv.execute.native.torch_autograd_call` accepted goes to
    torch's autograd with these tensors: ``"auto"`` runs ``native`` first, and a 1-d
    ``groups=1`` layer's data requires grad (:attr:`~tnconv.execute.native.NativeCall.small_weight_vjp`)."""
    if call is None or not native_runs_first():
        return False
    if not call.small_weight_vjp:
        return True
    data = tensors.get(call.operands[0])
    return isinstance(data, torch.Tensor) and data.requires_grad


#: The strategies ``"auto"`` may try before ``"native"`` that never take a network
#: :func:`~tnconv.execute.native.torch_autograd_call` accepts (it rules out ``trim``;
#: ``separable`` and ``square`` take one-input and square networks).
_BEFORE_NATIVE = frozenset({"trim", "separable", "square"})
_native_first: list = [-1, False]  # generation, answer


def native_runs_first() -> bool:
    """Whether ``"auto"`` runs the built-in ``"native"`` strategy on the networks
    :func:`~tnconv.execute.native.torch_autograd_call` accepts: no strategy registered by a
    user comes before it, and it was not replaced (re-read after every ``register_strategy``)."""
    if _native_first[0] != _GENERATION[0]:
        order = auto_order()
        first = "native" in order and set(order[: order.index("native")]) <= _BEFORE_NATIVE
        _native_first[:] = [_GENERATION[0], first and STRATEGIES.get("native") is contract_native]
    return _native_first[1]


#: ``(tensors, bias) -> result`` of a network, resolved once (see :func:`bound_runners`).
Runner = Callable[[dict[str, torch.Tensor], "torch.Tensor | None"], torch.Tensor]
#: :func:`bound_runners`' result: the network, its plain runner and the call torch's
#: autograd may take over.
BoundRunners = tuple[TensorNetwork, "Runner | None", "NativeCall | None"]


def bound_runners(network: TensorNetwork) -> BoundRunners:
    """What a front-end keeps per signature so that a repeated ``strategy="auto"`` call is
    one look-up plus the kernel (:func:`run_bound`): ``network``, the dispatcher's bound
    runner of it (:func:`~tnconv.execute.dispatch.bind`, input checks skipped: the front-end
    keys on the shapes) for calls without derivatives, and the call torch's autograd may
    differentiate (:func:`~tnconv.execute.native.torch_autograd_call`) or ``None``.
    ``(network, None, None)`` for a network with an empty tensor (:func:`complex_safe`
    sends those to ``"einsum"``)."""
    shapes = [shape for _, shape in network.input_shapes] + [network.output_shape]
    if any(not math.prod(shape) for shape in shapes):
        return network, None, None
    return network, bind(network, network.input_shapes), torch_autograd_call(network)


def run_bound(
    runners: BoundRunners, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None
) -> torch.Tensor | None:
    """A front-end's ``strategy="auto"`` call on checked real tensors through its
    :func:`bound_runners`, or ``None`` when it needs :func:`contract_with_bias` (a
    derivative that tnconv's Function takes, or an empty tensor)."""
    _, plain, call = runners
    if plain is None:
        return None
    if not needs_autograd(bias, *tensors.values()):
        return plain(tensors, bias)
    return call.runner(tensors, bias) if _hands_over(call, tensors) else None  # type: ignore[union-attr]


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """Whether a result computed from ``tensors`` must carry derivatives (reverse or forward
    mode, or a ``torch.func`` transform)."""
    if _transforms_active() or forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def autocast_inputs(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The operands of a convolution under ``torch.autocast``, cast as torch casts its own.

    Convolutions are on autocast's lower-precision list on CPU and CUDA: while autocast is
    enabled for the tensors' device, floating-point operands other than ``float64`` are cast
    to the autocast dtype (``torch.get_autocast_dtype``), so the result has that dtype and
    the backward pass runs in it; the cast itself is differentiable, so ``float32``
    parameters get ``float32`` gradients. Outside autocast the tensors come back unchanged.

    >>> import torch
    >>> x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
    >>> with torch.autocast("cpu", torch.bfloat16):
    ...     [t.dtype for t in autocast_inputs(x, w, None) if t is not None]
    [torch.bfloat16, torch.bfloat16]
    """
    first = tensors[0]
    device = first.device.type if first is not None else "cpu"
    if device not in ("cpu", "cuda", "xpu", "mps", "hpu") or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype not in (torch.float64, dtype) else t
        for t in tensors
    )
