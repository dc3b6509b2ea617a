"""KFAC for whole networks: factors against unfold/Jacobian references (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tnconv
from tnconv.kfac import KFAC

from .kfac_reference import (
    input_factor_from_unfolded,
    kfac_reduce_factor,
    kfac_reduce_factor_transpose,
    kfc_factor,
    kfc_factor_transpose,
    unfold_conv,
)

DTYPE = torch.float64


class MixedNet(torch.nn.Module):
    """Conv2d (groups, stride, padding) → ConvTranspose2d (groups, output size given) →
    Conv1d (no bias) → Linear; the ReLU after the first layer works in place."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv2d = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
        self.convT = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2)
        self.conv1d = torch.nn.Conv1d(6, 3, 5, stride=3, padding=2, bias=False)
        self.linear = torch.nn.Linear(66, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu_(self.conv2d(x))  # [N, 4, 4, 4]
        h = torch.tanh(self.convT(h, output_size=[8, 8]))  # output_padding 1 implied by the size
        h = torch.tanh(self.conv1d(h.flatten(2)))  # [N, 3, 22]
        return self.linear(h.flatten(1))


def mixed_net(classes: int = 3) -> MixedNet:
    torch.manual_seed(0)
    return MixedNet(classes).to(DTYPE)


def capture_inputs(model, x):
    """Each module's input and output in one forward pass (test's own hooks)."""
    seen = {}
    handles = [
        m.register_forward_hook(lambda m, args, out, name=name: seen.update({name: (args[0], out)}))
        for name, m in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def reference_input_factor(module, x, y, approx):
    """``A`` from the unfold reference (Linear: ``[d, d]``)."""
    bias = module.bias is not None
    if isinstance(module, torch.nn.Linear):
        a = x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)  # [N, D, R]
        return input_factor_from_unfolded(a, 1, bias, approx)[0]
    if module.transposed:
        out_pad = tuple(
            y.shape[d + 2]
            - (
                (x.shape[d + 2] - 1) * module.stride[d]
                - 2 * module.padding[d]
                + module.dilation[d] * (module.kernel_size[d] - 1)
                + 1
            )
            for d in range(x.dim() - 2)
        )
        fn = kfc_factor_transpose if approx == "expand" else kfac_reduce_factor_transpose
        return fn(
            x, module.kernel_size, module.stride, module.padding, out_pad, module.dilation, module.groups, bias=bias
        )
    fn = kfc_factor if approx == "expand" else kfac_reduce_factor
    return fn(x, module.kernel_size, module.stride, module.padding, module.dilation, module.groups, bias=bias)


def layer_output_jacobian(model, module, x):
    """Model output ``f``, layer output ``y`` and ``∂f/∂y`` as ``[f.numel(), *y.shape]``."""
    store = {}

    def hook(mod, args, out):
        store["y"] = out.detach().requires_grad_()
        return store["y"].clone()  # later in-place ops must not touch the leaf

    handle = module.register_forward_hook(hook)
    f = model(x)
    handle.remove()
    y = store["y"]
    rows = [torch.autograd.grad(fi, y, retain_graph=True)[0] for fi in f.reshape(-1)]
    return f.detach(), y, torch.stack(rows)


def channels_second(t, module, lead):
    """Move a Linear's feature dimension next to the batch: ``[…, N, *, C] → […, N, C, *]``."""
    if isinstance(module, torch.nn.Linear):
        return t.movedim(-1, lead + 1)
    return t


def reduction(loss_fn, f):
    if loss_fn.reduction == "sum":
        return 1.0
    return 1.0 / (f.shape[0] if isinstance(loss_fn, torch.nn.CrossEntropyLoss) else f.numel())


def reference_output_factor(model, module, x, targets, loss_fn, approx, fisher):
    """``B`` from the exact curvature w.r.t. the layer output (type-2: ``Jᵀ H J``, H from
    ``jacrev(jacrev(loss))``; empirical: outer products of autograd gradients)."""
    f, y, J = layer_output_jacobian(model, module, x)
    groups = getattr(module, "groups", 1)
    n = f.shape[0]
    if fisher == "type-2":
        H = torch.func.jacrev(torch.func.jacrev(lambda out: loss_fn(out, targets)))(f).reshape(f.numel(), f.numel())
        positions = math.prod(y.shape[1:-1] if isinstance(module, torch.nn.Linear) else y.shape[2:])
        J = channels_second(J, module, 1).reshape(f.numel(), n, groups, -1, positions)
        curvature = torch.einsum("pngao,pq,qngbr->ngaobr", J, H, J)
        if approx == "expand":
            return torch.einsum("ngaobo->gab", curvature) / J.shape[-1]
        return curvature.sum(dim=(0, 3, 5))
    (grad,) = torch.autograd.grad(loss_fn(model_with_leaf(model, module, y, x), targets), y)
    v = channels_second(grad, module, 0) / math.sqrt(reduction(loss_fn, f))
    v = v.reshape(n, groups, v.shape[1] // groups, -1)
    if approx == "expand":
        return torch.einsum("ngao,ngbo->gab", v, v) / v.shape[-1]
    s = v.sum(-1)
    return torch.einsum("nga,ngb->gab", s, s)


def model_with_leaf(model, module, y, x):
    handle = module.register_forward_hook(lambda mod, args, out: y.clone())
    out = model(x)
    handle.remove()
    return out


LOSSES = {
    "ce-mean": lambda: torch.nn.CrossEntropyLoss(),
    "ce-sum": lambda: torch.nn.CrossEntropyLoss(reduction="sum"),
    "mse-mean": lambda: torch.nn.MSELoss(),
}


def make_targets(loss_name, n, classes, generator):
    if loss_name.startswith("ce"):
        return torch.randint(0, classes, (n,), generator=generator)
    return torch.randn(n, classes, generator=generator, dtype=DTYPE)


def test_one_hot_unfold_reference_matches_torch_unfold():
    x = torch.randn(2, 3, 7, 6, dtype=DTYPE)
    mine = unfold_conv(x, (3, 2), (2, 1), (1, 0), (1, 2))
    torch.testing.assert_close(mine.flatten(2), F.unfold(x, (3, 2), (1, 2), (1, 0), (2, 1)))


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("fisher", ["type-2", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_factors_match_references(approx, fisher, loss_name):
    model, loss_fn = mixed_net(), LOSSES[loss_name]()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE)
    targets = make_targets(loss_name, 3, 3, g)
    kfac = KFAC(model, loss_fn, approx=approx, fisher=fisher)
    loss = kfac.update(x, targets)
    torch.testing.assert_close(loss, loss_fn(model(x), targets))
    assert sorted(kfac.factors) == ["conv1d", "conv2d", "convT", "linear"]
    seen = capture_inputs(model, x)
    for name, module in model.named_children():
        factors = kfac.factors[name]
        torch.testing.assert_close(
            factors.A, reference_input_factor(module, *seen[name], approx), rtol=1e-10, atol=1e-12
        )
        B = reference_output_factor(model, module, x, targets, loss_fn, approx, fisher)
        if isinstance(module, torch.nn.Linear):
            B = B[0]
        torch.testing.assert_close(factors.B, B, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())  # update leaves .grad alone


def test_inplace_activation_does_not_change_factors():
    torch.manual_seed(0)
    layers = [torch.nn.Conv1d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 4)]
    model = torch.nn.Sequential(*layers).to(DTYPE)
    inplace = torch.nn.Sequential(layers[0], torch.nn.ReLU(inplace=True), *layers[2:])
    x, t = torch.randn(5, 2, 6, dtype=DTYPE), torch.randint(0, 4, (5,))
    plain, tapped = KFAC(model, torch.nn.CrossEntropyLoss()), KFAC(inplace, torch.nn.CrossEntropyLoss())
    plain.update(x, t)
    tapped.update(x, t)
    for name in ("0", "3"):
        torch.testing.assert_close(plain.factors[name].B, tapped.factors[name].B)


def test_tnconv_modules_and_padding_modes():
    """tnconv.nn modules (convolution, N-d, transposed) are recognised; a circular padding is
    applied before unfolding."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tnconv.nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular"),
        torch.nn.Tanh(),
        tnconv.nn.ConvNd(4, 2, kernel_size=(2, 3), stride=(1, 2)),
        tnconv.nn.ConvTranspose2d(2, 2, 2, stride=2, bias=False),
        torch.nn.Flatten(),
    ).to(DTYPE)
    x, t = torch.randn(3, 2, 5, 5, dtype=DTYPE), torch.randn(3, 64, dtype=DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss(reduction="sum"), approx="expand")
    kfac.update(x, t)
    padded = F.pad(x, (1, 1, 1, 1), mode="circular")
    torch.testing.assert_close(kfac.factors["0"].A, kfc_factor(padded, (3, 3), bias=True))
    seen = capture_inputs(model, x)
    torch.testing.assert_close(kfac.factors["2"].A, kfc_factor(seen["2"][0], (2, 3), (1, 2), bias=True))
    torch.testing.assert_close(kfac.factors["3"].A, kfc_factor_transpose(seen["3"][0], 2, 2))
    for name in ("0", "2", "3"):
        B = reference_output_factor(model, model[int(name)], x, t, kfac.loss_fn, "expand", "type-2")
        torch.testing.assert_close(kfac.factors[name].B, B)


def test_four_dimensional_convolution():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tnconv.nn.ConvNd(2, 3, kernel_size=(2, 2, 2, 2), stride=(1, 2, 1, 1), padding=(1, 0, 0, 0)),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 1 * 2 * 2, 2),
    ).to(DTYPE)
    x, t = torch.randn(2, 2, 3, 3, 3, 3, dtype=DTYPE), torch.randint(0, 2, (2,))
    for approx, reference in (("expand", kfc_factor), ("reduce", kfac_reduce_factor)):
        kfac = KFAC(model, torch.nn.CrossEntropyLoss(), approx=approx)
        kfac.update(x, t)
        expected = reference(x, (2, 2, 2, 2), (1, 2, 1, 1), (1, 0, 0, 0), bias=True)
        torch.testing.assert_close(kfac.factors["0"].A, expected, rtol=1e-10, atol=1e-12)
        B = reference_output_factor(model, model[0], x, t, kfac.loss_fn, approx, "type-2")
        torch.testing.assert_close(kfac.factors["0"].B, B, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_name", ["ce-mean", "mse-mean"])
def test_monte_carlo_fisher_estimates_type_2(loss_name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(9, 3)
    ).to(DTYPE)
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 2, 5, dtype=DTYPE, generator=g), make_targets(loss_name, 4, 3, g)
    exact = KFAC(model, LOSSES[loss_name](), fisher="type-2")
    sampled = KFAC(model, LOSSES[loss_name](), fisher="mc", mc_samples=3000, generator=g)
    exact.update(x, t)
    sampled.update(x, t)
    for name in ("0", "3"):
        B, estimate = exact.factors[name].B, sampled.factors[name].B
        assert torch.linalg.norm(estimate - B) < 0.1 * torch.linalg.norm(B)
        torch.testing.assert_close(sampled.factors[name].A, exact.factors[name].A)


def test_ema_averages_updates():
    model = mixed_net()
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (3,), generator=g)) for _ in range(2)
    ]
    averaged = KFAC(model, torch.nn.CrossEntropyLoss(), ema=0.9)
    single = [KFAC(model, torch.nn.CrossEntropyLoss()) for _ in batches]
    for kfac, batch in zip(single, batches):
        kfac.update(*batch)
        averaged.update(*batch)
    for name in averaged.factors:
        for attr in ("A", "B"):
            first, second = (getattr(k.factors[name], attr) for k in single)
            torch.testing.assert_close(getattr(averaged.factors[name], attr), 0.9 * first + 0.1 * second)


def test_unknown_layers_are_listed_in_one_warning():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.Flatten(),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 2),
    )
    with pytest.warns(UserWarning) as record:
        kfac = KFAC(model, torch.nn.CrossEntropyLoss())
    assert len(record) == 1
    message = str(record[0].message)
    assert "1 (BatchNorm2d)" in message and "3 (LayerNorm)" in message and "2 layer(s)" in message
    assert sorted(kfac.layers) == ["0", "4"]


def test_frozen_layers_are_left_out():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert sorted(KFAC(model, torch.nn.MSELoss()).layers) == ["1"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(loss_fn=torch.nn.L1Loss()), TypeError),
        (dict(loss_fn=torch.nn.CrossEntropyLoss(reduction="none")), ValueError),
        (dict(loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=0.1)), ValueError),
        (dict(loss_fn=torch.nn.CrossEntropyLoss(weight=torch.ones(2))), ValueError),
        (dict(approx="full"), ValueError),
        (dict(fisher="type-1"), ValueError),
        (dict(damping=-1.0), ValueError),
        (dict(ema=1.0), ValueError),
        (dict(inverse="cholesky"), ValueError),
        (dict(pi_correction=True), ValueError),
        (dict(mc_samples=0), ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    arguments = {"model": torch.nn.Linear(3, 2), "loss_fn": torch.nn.CrossEntropyLoss(), **kwargs}
    with pytest.raises(error, match=next(iter(kwargs))):
        KFAC(**arguments)


def test_bad_targets_and_repeated_layers():
    linear = torch.nn.Linear(3, 3)
    kfac = KFAC(linear, torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="targets"):
        kfac.update(torch.randn(4, 3), torch.randn(4, 3))
    twice = KFAC(torch.nn.Sequential(linear, torch.nn.Tanh(), linear), torch.nn.MSELoss())
    with pytest.raises(RuntimeError, match="twice"):
        twice.update(torch.randn(4, 3), torch.randn(4, 3))
