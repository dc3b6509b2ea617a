"""The transposed convolution as a tensor network (docs/reference.md §3).

``y[n, (g co), i] = Σ x[n, (g ci), o] · Π[i, o, k] · w[(g ci), co, k]`` (+ bias), with the
Π of the convolution that maps the transposed convolution's output size ``I'`` back to its
input size ``O``. The network is *derived*: it is the input VJP of that convolution
(docs/reference.md §3, "input VJP = transposed conv") with the vector named ``x``, its channel legs
renamed to the transposed convolution's point of view (``ci`` ↔ ``co``).

Example:
    >>> import torch, tnconv
    >>> x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)
    >>> y = tnconv.conv_transpose(x, w, stride=2, padding=1, output_padding=1, groups=2)
    >>> ref = torch.nn.functional.conv_transpose2d(x, w, None, 2, 1, 1, 2)
    >>> y.shape, torch.allclose(y, ref, atol=1e-4)
    (torch.Size([2, 6, 10, 10]), True)
"""

from __future__ import annotations

import torch

from ..caching import cached
from ..execute import ops
from ..execute.autodiff import BoundRunners, autocast_inputs, bound_runners, contract_with_bias, run_bound
from ..spec.validation import IntOrTuple, check_bias, check_dims, check_same_dtype_device, check_tensor
from ..symbolic.builders.transpose import conv_transpose_network


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    strategy: str = "auto",
) -> torch.Tensor:
    """N-d transposed convolution, evaluated as a tensor network (gradients too).

    Args:
        input: ``[N, C_in, O_1, …, O_D]``, any ``D ≥ 1`` (or unbatched ``[C_in, O_1, …, O_D]``).
        weight: ``[C_in, C_out/groups, K_1, …, K_D]``.
        bias: ``[C_out]`` or ``None``.
        stride, padding, output_padding, groups, dilation: as
            ``torch.nn.functional.conv_transpose2d`` (``output_padding`` must be smaller
            than the stride or the dilation of its dimension).
        strategy: execution strategy (see :func:`tnconv.execute.strategies`).

    Returns:
        ``[N, C_out, I'_1, …, I'_D]`` with ``I' = (O−1)·S − 2P + Dl·(K−1) + output_padding + 1``.

    >>> import torch, tnconv
    >>> tnconv.conv_transpose(torch.randn(1, 2, 3, 3, 3, 3), torch.randn(2, 4, 2, 2, 2, 2), stride=2).shape
    torch.Size([1, 4, 6, 6, 6, 6])
    """
    if ops.plain_call(input, weight, bias, strategy):  # the common call: the checks below in a few comparisons
        runners = _transpose_runners(input.shape, weight.shape, stride, padding, output_padding, groups, dilation)
        check_bias(bias, runners[0].output_shape[1])
        result = run_bound(runners, {"x": input, "w": weight}, bias)
        return result if result is not None else contract_with_bias(runners[0], strategy, bias, x=input, w=weight)
    check_tensor(input, "input")
    check_tensor(weight, "weight", min_dim=3)
    if input.dim() == weight.dim() - 1:  # unbatched [C_in, O_1, …, O_D], as torch accepts
        return conv_transpose(
            input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation, strategy=strategy
        ).squeeze(0)
    check_tensor(input, "input", min_dim=3)
    if bias is not None:
        check_tensor(bias, "bias")
    input, weight, bias = autocast_inputs(input, weight, bias)  # before the dtype check, as torch casts first
    check_same_dtype_device(input=input, weight=weight, bias=bias)
    if ops.tracing():
        dims = weight.dim() - 2
        arguments = [ops.int_list(a, dims) for a in (stride, padding, output_padding)]
        return ops.conv_transpose(input, weight, bias, *arguments, groups, ops.int_list(dilation, dims), strategy)
    runners = _transpose_runners(input.shape, weight.shape, stride, padding, output_padding, groups, dilation)
    network = runners[0]
    check_bias(bias, network.output_shape[1])
    if strategy == "auto" and not input.is_complex():
        result = run_bound(runners, {"x": input, "w": weight}, bias)
        if result is not None:
            return result
    return contract_with_bias(network, strategy, bias, x=input, w=weight)


@cached(maxsize=4096)
def _transpose_runners(
    input_shape: torch.Size,
    weight_shape: torch.Size,
    stride: IntOrTuple,
    padding: IntOrTuple,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
) -> BoundRunners:
    """The network of one signature and its :func:`~tnconv.execute.autodiff.bound_runners`
    (a repeated ``strategy="auto"`` call is one look-up plus the kernel call)."""
    return bound_runners(
        conv_transpose_network(input_shape, weight_shape, stride, padding, output_padding, groups, dilation)
    )


def _aliased(dims: int):  # type: ignore[no-untyped-def]
    def conv_transpose_nd(  # type: ignore[no-untyped-def]
        input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        check_dims(input, dims, "input", f"conv_transpose{dims}d", unbatched=True)
        return conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)

    conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = f"conv_transpose{dims}d"
    conv_transpose_nd.__doc__ = f"{dims}-d :func:`conv_transpose` that insists on a {dims}-d input."
    return conv_transpose_nd


conv_transpose1d = _aliased(1)
conv_transpose2d = _aliased(2)
conv_transpose3d = _aliased(3)
