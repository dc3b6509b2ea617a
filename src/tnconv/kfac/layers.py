"""The layers KFAC knows: their Kronecker factors and their weights as matrices.

Every supported layer computes, per group ``g`` and output position ``o`` (a batch entry
of a ``Linear`` applied to ``[N, …, D_in]`` has the positions ``…``),
``y[n, g, :, o] = W_g · a[n, g, :, o]`` with ``W_g`` a ``[C_out/G, d]`` matrix and
``a`` the unfolded input (a constant ``1`` appended last when the layer has a bias, so
that ``W_g = [weight_g | bias_g]``):

- ``torch.nn.Linear``: ``W = [weight | bias]``, ``d = in_features (+1)``, ``G = 1``.
- ``torch.nn.Conv1d/2d/3d`` and ``tnconv.nn.Conv*d``/``ConvNd``: ``W_g`` is the weight
  block of group ``g`` reshaped to ``[C_out/G, C_in/G·∏K]`` (features ordered ``(ci, k)``).
- ``torch.nn.ConvTranspose1d/2d/3d``: the weight ``[C_in, C_out/G, K…]`` of group ``g``
  permuted to ``[C_out/G, C_in/G, K…]``, then reshaped like a convolution's; ``a`` is the
  unfolded input of the transposed convolution and ``o`` runs over its *output* positions.

With ``|O|`` positions and output gradients ``b[n, g, :, o]`` (one per backpropagated
vector, see :mod:`tnconv.kfac.loss`) the factors are, computed by tnconv's
:func:`~tnconv.kfc_factor`, :func:`~tnconv.kfac_reduce_factor` (their ``_transpose``
versions) and :func:`~tnconv.output_grad_factor`,

============  ======================================================  ==========================================
approx        ``A_g`` (docs/reference.md §3)                                       ``B_g``
============  ======================================================  ==========================================
``expand``    ``(1/N) Σ_{n,o} a aᵀ``                                  ``(1/|O|) Σ_{n,o} b bᵀ``
``reduce``    ``(1/(N|O|²)) Σ_n (Σ_o a)(Σ_o a)ᵀ``                     ``Σ_n (Σ_o b)(Σ_o b)ᵀ``
============  ======================================================  ==========================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch.nn.modules.conv import _ConvNd

from ..functional.curvature import (
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfac_reduce_root,
    kfac_reduce_root_transpose,
    kfc_factor,
    kfc_factor_transpose,
    output_grad_factor,
)
from ..functional.unfold import unfold, unfold_transpose

APPROXIMATIONS = ("expand", "reduce")


class KroneckerLayer(ABC):
    """How KFAC reads one module: factors from its input and output gradients, and its
    ``(weight, bias)`` as the per-group matrices ``[G, C_out/G, d]``."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    @property
    def has_bias(self) -> bool:
        return getattr(self.module, "bias", None) is not None

    @property
    @abstractmethod
    def groups(self) -> int: ...

    @property
    def input_dim(self) -> int:
        """``d``: the rows of ``A`` (the weight matrix's columns, plus one for a bias).

        >>> kronecker_layer(torch.nn.Conv2d(4, 8, 3, groups=2)).input_dim
        19
        """
        shape = self.module.weight.shape
        return self.weight_to_matrix(torch.empty(shape, device="meta")).shape[-1] + int(self.has_bias)

    def input_factor_bytes(self, itemsize: int) -> int:
        """Bytes of ``A`` (``[G, d, d]``) in a dtype of ``itemsize`` bytes."""
        return self.groups * self.input_dim**2 * itemsize

    @abstractmethod
    def input_factor(self, inputs: torch.Tensor, output: torch.Tensor, approx: str) -> torch.Tensor:
        """``A``: ``[G, d, d]`` from the module's input (``output`` for its shape only)."""

    @abstractmethod
    def reduce_root(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The root ``R`` (``[G, N, d]``, ``A = Rᵀ R``) of the KFAC-reduce ``A``: the mean of
        the unfolded input over the positions over ``√N``, without a ``d × d`` product."""

    @abstractmethod
    def output_factor(self, grads: torch.Tensor, approx: str) -> torch.Tensor:
        """``B``: ``[G, C_out/G, C_out/G]`` from ``[M, *output.shape]`` output gradients."""

    @abstractmethod
    def unfolded(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """``a``: ``[N, G, d, |O|]``, the unfolded input per group and position (bias row last)."""

    @abstractmethod
    def grad_columns(self, grad: torch.Tensor) -> torch.Tensor:
        """``b``: ``[N, G, C_out/G, |O|]`` from one output gradient shaped like the output."""

    def per_sample_gradients(self, inputs: torch.Tensor, output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``[N, G, C_out/G, d]``: the per-sample matrices ``Σ_o b aᵀ`` of ``[W_g | b_g]``."""
        a, b = self.unfolded(inputs, output), self.grad_columns(grad)
        return torch.einsum("ngao,ngbo->ngab", b, a)

    @abstractmethod
    def weight_to_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``[G, C_out/G, d_w]`` from a tensor shaped like the weight."""

    @abstractmethod
    def matrix_to_weight(self, matrix: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`weight_to_matrix`."""

    def to_matrix(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``[G, C_out/G, d]``: ``[weight | bias]`` per group (bias only if the layer has one)."""
        matrix = self.weight_to_matrix(weight)
        if not self.has_bias:
            return matrix
        if bias is None:
            raise ValueError("the layer has a bias: its gradient must be given together with the weight's")
        return torch.cat([matrix, bias.reshape(matrix.shape[0], matrix.shape[1], 1)], dim=2)

    def from_matrix(self, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight, bias)`` from ``[G, C_out/G, d]`` (``bias`` is ``None`` without one)."""
        if not self.has_bias:
            return self.matrix_to_weight(matrix), None
        return self.matrix_to_weight(matrix[..., :-1]), matrix[..., -1].reshape(-1)


class LinearLayer(KroneckerLayer):
    """``torch.nn.Linear`` on ``[N, …, D_in]``: the middle dimensions share the weight."""

    module: torch.nn.Linear

    @property
    def groups(self) -> int:
        return 1

    def _positions(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[N, positions, features]`` (an unbatched ``[D]`` is one sample)."""
        if tensor.dim() == 1:
            return tensor.reshape(1, 1, -1)
        return tensor.reshape(tensor.shape[0], -1, tensor.shape[-1])

    def input_factor(self, inputs: torch.Tensor, output: torch.Tensor, approx: str) -> torch.Tensor:
        a = self._positions(inputs)
        if self.has_bias:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
        batch, positions = a.shape[0], a.shape[1]
        if approx == "expand":
            factor = torch.einsum("nri,nrj->ij", a, a) / batch
        else:
            summed = a.sum(1)
            factor = summed.T @ summed / (batch * positions**2)
        return factor.unsqueeze(0)

    def reduce_root(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        a = self._positions(inputs)
        root = a.mean(1) / math.sqrt(a.shape[0])  # [N, D]
        if self.has_bias:
            root = torch.cat([root, root.new_full((root.shape[0], 1), 1 / math.sqrt(a.shape[0]))], dim=-1)
        return root.unsqueeze(0)

    def unfolded(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        a = self._positions(inputs)
        if self.has_bias:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
        return a.transpose(1, 2).unsqueeze(1)

    def grad_columns(self, grad: torch.Tensor) -> torch.Tensor:
        return self._positions(grad).transpose(1, 2).unsqueeze(1)

    def per_sample_gradients(self, inputs: torch.Tensor, output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        a, b = self._positions(inputs), self._positions(grad)
        weight = torch.einsum("nra,nrb->nab", b, a)
        if self.has_bias:
            weight = torch.cat([weight, b.sum(1).unsqueeze(-1)], dim=-1)
        return weight.unsqueeze(1)

    def output_factor(self, grads: torch.Tensor, approx: str) -> torch.Tensor:
        vectors = grads.shape[0]
        batch = grads.shape[1] if grads.dim() > 2 else 1
        flat = grads.reshape(vectors * batch, -1, grads.shape[-1]).transpose(1, 2)  # [M·N, D_out, R]
        return output_grad_factor(flat, approx, 1)

    def weight_to_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.unsqueeze(0)

    def matrix_to_weight(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix[0]


class ConvLayer(KroneckerLayer):
    """Convolutions and transposed convolutions (``torch.nn.modules.conv._ConvNd``)."""

    module: _ConvNd

    @property
    def groups(self) -> int:
        return self.module.groups

    @property
    def dims(self) -> int:
        return len(self.module.kernel_size)

    def _batched(self, tensor: torch.Tensor, leading: int = 0) -> torch.Tensor:
        """Add the batch dimension to an unbatched ``[C, I…]`` (after ``leading`` dims)."""
        return tensor.unsqueeze(leading) if tensor.dim() == leading + self.dims + 1 else tensor

    def input_factor(self, inputs: torch.Tensor, output: torch.Tensor, approx: str) -> torch.Tensor:
        if self.module.transposed:
            function = kfc_factor_transpose if approx == "expand" else kfac_reduce_factor_transpose
        else:
            function = kfc_factor if approx == "expand" else kfac_reduce_factor
        return self._input_function(function, inputs, output)

    def reduce_root(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """:func:`tnconv.kfac_reduce_root`: window sums of the input."""
        function = kfac_reduce_root_transpose if self.module.transposed else kfac_reduce_root
        return self._input_function(function, inputs, output)

    def _input_function(
        self, function: Callable[..., torch.Tensor], inputs: torch.Tensor, output: torch.Tensor
    ) -> torch.Tensor:
        """``function`` (a factor or root front-end) on the module's input and hyper-parameters."""
        m = self.module
        x, y = self._batched(inputs), self._batched(output)
        if m.transposed:
            return function(
                x,
                m.kernel_size,
                stride=m.stride,
                padding=m.padding,
                output_padding=self._output_padding(x, y),
                dilation=m.dilation,
                groups=m.groups,
                bias=self.has_bias,
            )
        padding = m.padding
        if m.padding_mode != "zeros":
            # the module pads explicitly, then convolves without padding
            x = torch.nn.functional.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            padding = 0
        return function(
            x, m.kernel_size, stride=m.stride, padding=padding, dilation=m.dilation, groups=m.groups, bias=self.has_bias
        )

    def _output_padding(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, ...]:
        """The output padding actually used (``forward(…, output_size=…)`` may change it)."""
        m = self.module
        return tuple(
            out - ((size - 1) * s - 2 * p + dl * (k - 1) + 1)
            for out, size, s, p, dl, k in zip(y.shape[2:], x.shape[2:], m.stride, m.padding, m.dilation, m.kernel_size)
        )

    def unfolded(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        m = self.module
        x, y = self._batched(inputs), self._batched(output)
        if m.transposed:
            u = unfold_transpose(x, m.kernel_size, m.stride, m.padding, self._output_padding(x, y), m.dilation)
        else:
            padding = m.padding
            if m.padding_mode != "zeros":
                x = torch.nn.functional.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
                padding = 0
            u = unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)
        u = u.reshape(u.shape[0], self.groups, u.shape[1] // self.groups, u.shape[2])
        if self.has_bias:
            u = torch.cat([u, u.new_ones(u.shape[0], self.groups, 1, u.shape[3])], dim=2)
        return u

    def grad_columns(self, grad: torch.Tensor) -> torch.Tensor:
        grad = self._batched(grad)
        return grad.reshape(grad.shape[0], self.groups, grad.shape[1] // self.groups, -1)

    def output_factor(self, grads: torch.Tensor, approx: str) -> torch.Tensor:
        grads = self._batched(grads, leading=1)
        return output_grad_factor(grads.flatten(0, 1), approx, self.groups)

    def weight_to_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        groups = self.groups
        if self.module.transposed:  # [C_in, C_out/G, K…] → [G, C_out/G, C_in/G, ∏K]
            per_group = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1).transpose(1, 2)
            return per_group.reshape(groups, weight.shape[1], -1)
        return weight.reshape(groups, weight.shape[0] // groups, -1)

    def matrix_to_weight(self, matrix: torch.Tensor) -> torch.Tensor:
        shape = self.module.weight.shape
        if self.module.transposed:
            groups, out_per_group = matrix.shape[:2]
            per_group = matrix.reshape(groups, out_per_group, shape[0] // groups, math.prod(shape[2:]))
            return per_group.transpose(1, 2).reshape(shape)
        return matrix.reshape(shape)


def kronecker_layer(module: torch.nn.Module) -> KroneckerLayer | None:
    """The adapter of a supported module, ``None`` for any other.

    >>> type(kronecker_layer(torch.nn.Conv2d(2, 4, 3))).__name__
    'ConvLayer'
    >>> kronecker_layer(torch.nn.BatchNorm2d(4)) is None
    True
    """
    if isinstance(module, torch.nn.Linear):
        return LinearLayer(module)
    if isinstance(module, _ConvNd):
        return ConvLayer(module)
    return None
