"""KFAC-expand and KFAC-reduce equal the exact GGN block where Eschenhagen et al. (2023) prove it.

Setting: a *deep linear* (affine) network whose layers share their weights over a
dimension ``o`` (positions of a convolution, middle dimensions of a ``Linear``), and a
square loss, so that the loss Hessian ``H = 2R·I`` is constant. For layer ``l`` with
``y_{n,o} = W a_{n,o}`` the exact GGN block is ``Σ_n J_nᵀ H J_n`` with
``J_n = Σ_o a_{n,o}ᵀ ⊗ ∂f_n/∂y_{n,o}``.

- Expand setting: the loss is applied at every position (the output keeps ``o``) and every
  final position depends on exactly one position of each layer's output, through a
  Jacobian ``J_k`` that depends only on the "kind" ``k`` of path (a tap of a
  non-overlapping transposed convolution), the same set of kinds for every ``o``. Then
  ``GGN = Σ_{n,o} a aᵀ ⊗ C`` with ``C = Σ_k J_kᵀ H J_k`` the same for every ``(n, o)``;
  KFAC-expand gives ``A = (1/N)Σ_{n,o} a aᵀ`` and ``B = (1/|O|)Σ_{n,o} C = N·C``: the
  product is exactly the GGN.
- Reduce setting: the positions are summed (or averaged, factor ``c``) before the loss, so
  ``∂f_n/∂y_{n,o} = c·J`` is the same for every ``o``. Then
  ``GGN = Σ_n (Σ_o a)(Σ_o a)ᵀ ⊗ c²JᵀHJ``; KFAC-reduce gives
  ``A = (1/(N|O|²))Σ_n (Σ_o a)(Σ_o a)ᵀ`` and ``B = Σ_n (|O|cJ)ᵀH(|O|cJ) = N|O|²c²JᵀHJ``
  (the backpropagated vectors are the same at every position): exact again.

Biases keep the network affine (constant Jacobians), the appended constant feature is
one more input feature. With ``G`` groups, channels of different groups never mix in
these networks and ``H`` is diagonal, so the GGN is block-diagonal over groups, as KFAC
assumes. The GGN comes from ``torch.func`` (``jacrev`` of the model output w.r.t. the
layer's parameters, ``jacrev(jacrev(·))`` of the loss).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev

from tnconv.kfac import KFAC

DTYPE = torch.float64
CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}
CONV_T = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d}


class GroupedConvNet(torch.nn.Sequential):
    """Conv (K=3, padding 1) → non-overlapping ConvTranspose (K=S=2) → 1×1 Conv, two groups throughout."""

    def __init__(self, dims: int) -> None:
        super().__init__(
            CONV[dims](2, 4, 3, padding=1, groups=2),
            CONV_T[dims](4, 4, 2, stride=2, groups=2, bias=True),
            CONV[dims](4, 6, 1, groups=2, bias=False),
        )


class SharedLinearNet(torch.nn.Sequential):
    """Linear layers on ``[N, R, D]``: the weight is shared over the ``R`` positions."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5, bias=False), torch.nn.Linear(5, 2))


class Reduced(torch.nn.Module):
    """Sum or mean over the weight-sharing positions before the loss."""

    def __init__(self, net: torch.nn.Module, positions: tuple[int, ...], mean: bool) -> None:
        super().__init__()
        self.net, self.positions, self.mean = net, positions, mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y.mean(self.positions) if self.mean else y.sum(self.positions)


def build(kind: str, setting: str, mean: bool):
    """Model, input and the targets' shape."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if kind == "linear":
        net, x, positions = SharedLinearNet(), torch.randn(3, 4, 3, generator=g, dtype=DTYPE), (1,)
    else:
        dims = int(kind[-2])
        net = GroupedConvNet(dims)
        x = torch.randn(3, 2, *([3] * dims), generator=g, dtype=DTYPE)
        positions = tuple(range(2, 2 + dims))
    model = (net if setting == "expand" else Reduced(net, positions, mean)).to(DTYPE)
    with torch.no_grad():
        shape = model(x).shape
    return model, x, torch.randn(shape, generator=g, dtype=DTYPE)


def layer_index_matrix(module):
    """Torch-order indices of ``(weight, bias)`` arranged as ``[G, C_out/G, d]``: row ``co`` of
    group ``g`` holds the weights that map the unfolded input to output channel ``(g, co)``,
    features ``(ci, k)``, then the bias."""
    w = module.weight
    idx = torch.arange(w.numel()).reshape(w.shape)
    groups = getattr(module, "groups", 1)
    if isinstance(module, torch.nn.Linear):
        matrix = idx.unsqueeze(0)
    elif module.transposed:  # [C_in, C_out/G, K…]: y[(g,co)] = Σ w[(g,ci), co, k] · unfolded[(g,ci,k)]
        matrix = idx.reshape(groups, w.shape[0] // groups, w.shape[1], -1).permute(0, 2, 1, 3)
        matrix = matrix.reshape(groups, w.shape[1], -1)
    else:
        matrix = idx.reshape(groups, w.shape[0] // groups, -1)
    if module.bias is not None:
        bias = w.numel() + torch.arange(module.bias.numel()).reshape(groups, -1, 1)
        matrix = torch.cat([matrix, bias], dim=2)
    return matrix


def exact_ggn(model, module_name, x, targets, loss_fn):
    """GGN block of one layer over its parameters in torch order (weight, then bias)."""
    params = dict(model.named_parameters())
    names = [n for n in params if n.rpartition(".")[0] == module_name]
    names.sort(key=lambda n: n.endswith("bias"))

    def output(layer_params):
        return functional_call(model, {**params, **layer_params}, (x,))

    out = output({n: params[n] for n in names})
    jac = jacrev(output)({n: params[n].detach() for n in names})
    J = torch.cat([jac[n].reshape(out.numel(), -1) for n in names], dim=1)
    H = jacrev(jacrev(lambda o: loss_fn(o, targets)))(out.detach()).reshape(out.numel(), out.numel())
    return J.T @ H @ J, names


CASES = [
    (kind, setting, reduction, mean)
    for kind in ("linear", "conv1d", "conv2d")
    for setting in ("expand", "reduce")
    for reduction in ("mean", "sum")
    for mean in ((True, False) if setting == "reduce" else (False,))
]


@pytest.mark.parametrize("kind, setting, reduction, mean", CASES)
def test_kfac_equals_exact_ggn(kind, setting, reduction, mean):
    model, x, targets = build(kind, setting, mean)
    loss_fn = torch.nn.MSELoss(reduction=reduction)
    damping = 0.1
    kfac = KFAC(model, loss_fn, approx=setting, damping=damping)
    kfac.update(x, targets)
    model.zero_grad()
    loss_fn(model(x), targets).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    preconditioned = kfac.precondition(grads)
    assert len(kfac.factors) == 3
    for name, layer in kfac.layers.items():
        ggn, names = exact_ggn(model, name, x, targets, loss_fn)
        factors = kfac.factors[name]
        A, B = (factors.A, factors.B) if factors.A.dim() == 3 else (factors.A[None], factors.B[None])
        index = layer_index_matrix(layer.module)
        groups = index.shape[0]
        for g in range(groups):
            rows = index[g].reshape(-1)
            torch.testing.assert_close(ggn[rows][:, rows], torch.kron(B[g], A[g]), rtol=1e-10, atol=1e-12)
            for other in range(groups):  # KFAC's premise here: no coupling between groups
                if other != g:
                    assert ggn[rows][:, index[other].reshape(-1)].abs().max() < 1e-12
        # layout-free: the preconditioned gradient solves (GGN + λI) p = g in torch's own order
        g_flat = torch.cat([grads[n].reshape(-1) for n in names])
        solved = torch.linalg.solve(ggn + damping * torch.eye(len(g_flat), dtype=DTYPE), g_flat)
        torch.testing.assert_close(torch.cat([preconditioned[n].reshape(-1) for n in names]), solved)


def test_expand_is_not_exact_in_the_reduce_setting():
    """The two approximations differ where their assumptions differ (the test can fail)."""
    model, x, targets = build("conv1d", "reduce", mean=False)
    loss_fn = torch.nn.MSELoss()
    kfac = KFAC(model, loss_fn, approx="expand")
    kfac.update(x, targets)
    ggn, _ = exact_ggn(model, "net.2", x, targets, loss_fn)
    index = layer_index_matrix(model.net[2])[0].reshape(-1)
    factors = kfac.factors["net.2"]
    approx = torch.kron(factors.B[0], factors.A[0])
    assert torch.linalg.norm(approx - ggn[index][:, index]) > 1e-3 * torch.linalg.norm(approx)
