"""The N-d convolution front-ends: validate, build the network, execute (docs/reference.md §3).

``y[n, (g co), o] = Σ x[n, (g ci), i] · Π[i, o, k] · w[(g co), ci, k]`` (+ bias).
"""

from __future__ import annotations

import torch

from ..caching import cached
from ..execute import ops
from ..execute.autodiff import BoundRunners, autocast_inputs, bound_runners, contract_with_bias, run_bound
from ..spec.validation import IntOrTuple, Padding, check_bias, check_dims, check_same_dtype_device, check_tensor
from ..symbolic.builders.conv import conv_network


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """N-d convolution (cross-correlation, as PyTorch), evaluated as a tensor network.

    Args:
        input: ``[N, C_in, I_1, …, I_D]``, any ``D ≥ 1`` (or unbatched ``[C_in, I_1, …, I_D]``,
            giving an unbatched result, as torch).
        weight: ``[C_out, C_in/groups, K_1, …, K_D]``.
        bias: ``[C_out]`` or ``None``.
        stride, padding, dilation, groups: as ``torch.nn.functional.conv2d``; ``padding``
            may be an int, a D-tuple, ``'valid'`` or ``'same'``.
        strategy: execution strategy (``"auto"``, ``"einsum"``, …; see :func:`tnconv.execute.strategies`).

    Returns:
        ``[N, C_out, O_1, …, O_D]``.

    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 3, 5, 5, 5, 5), torch.randn(4, 3, 3, 3, 3, 3)
    >>> tnconv.conv(x, w, padding="same").shape        # a 4-d convolution
    torch.Size([2, 4, 5, 5, 5, 5])
    """
    if ops.plain_call(input, weight, bias, strategy):  # the common call: the checks below in a few comparisons
        runners = _conv_runners(input.shape, weight.shape, stride, padding, dilation, groups)
        check_bias(bias, weight.shape[0])
        result = run_bound(runners, {"x": input, "w": weight}, bias)
        return result if result is not None else contract_with_bias(runners[0], strategy, bias, x=input, w=weight)
    check_tensor(input, "input")
    check_tensor(weight, "weight", min_dim=3)
    if input.dim() == weight.dim() - 1:  # unbatched [C_in, I_1, …, I_D], as torch accepts
        return conv(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups, strategy=strategy).squeeze(0)
    check_tensor(input, "input", min_dim=3)
    if bias is not None:
        check_tensor(bias, "bias")
    input, weight, bias = autocast_inputs(input, weight, bias)  # before the dtype check, as torch casts first
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    if ops.tracing():  # the operator checks the shapes (under jit.trace, sizes here are traced tensors)
        dims = weight.dim() - 2
        pads, name = ops.padding_arguments(padding, dims)
        strides, dilations = ops.int_list(stride, dims), ops.int_list(dilation, dims)
        return ops.conv(input, weight, bias, strides, pads, name, dilations, groups, strategy)
    check_bias(bias, weight.shape[0])
    runners = _conv_runners(input.shape, weight.shape, stride, padding, dilation, groups)
    if strategy == "auto" and not input.is_complex():
        result = run_bound(runners, {"x": input, "w": weight}, bias)
        if result is not None:
            return result
    return contract_with_bias(runners[0], strategy, bias, x=input, w=weight)


@cached(maxsize=4096)
def _conv_runners(
    input_shape: torch.Size,
    weight_shape: torch.Size,
    stride: IntOrTuple,
    padding: Padding,
    dilation: IntOrTuple,
    groups: int,
) -> BoundRunners:
    """The network of one signature and its :func:`~tnconv.execute.autodiff.bound_runners`
    (a repeated ``strategy="auto"`` call of :func:`conv` is one look-up plus the kernel call)."""
    return bound_runners(conv_network(input_shape, weight_shape, stride, padding, dilation, groups))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """1-d :func:`conv` that insists on a ``[N, C_in, L]`` (or unbatched ``[C_in, L]``) input."""
    check_dims(input, 1, "input", "conv1d", unbatched=True)
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """2-d :func:`conv` that insists on a ``[N, C_in, H, W]`` (or unbatched ``[C_in, H, W]``) input."""
    check_dims(input, 2, "input", "conv2d", unbatched=True)
    return conv(input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # type: ignore[no-untyped-def]
    """3-d :func:`conv` that insists on a ``[N, C_in, D, H, W]`` (or unbatched ``[C_in, D, H, W]``) input."""
    check_dims(input, 3, "input", "conv3d", unbatched=True)
    return conv(input, weight, bias, stride, padding, dilation, groups)
