"""Streaming factors (A formed in the last backward pass, B summed per arriving gradient) equal the factors
of the former stack-then-compute implementation (tests/kfac_reference.py) in float64, for
every layer kind, fisher type, approximation and loss; and the robustness rules of update."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from tnconv.kfac import KFAC, NonFiniteError

from .kfac_reference import stacked_factors
from .test_kfac_model import mixed_net

DTYPE = torch.float64


class AllKinds(torch.nn.Module):
    """Conv1d, Conv3d (replicate padding), ConvTranspose1d, Linear on [N, R, D] and a Linear."""

    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv1d(2, 4, 3, padding=1, groups=2)
        self.t1 = torch.nn.ConvTranspose1d(4, 2, 2, stride=2)
        self.c3 = torch.nn.Conv3d(1, 2, 2, padding=1, padding_mode="replicate", bias=False)
        self.seq = torch.nn.Linear(2, 3)
        self.head = torch.nn.Linear(3 * 12 + 2 * 27, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.t1(torch.tanh(self.c1(x))))  # [N, 2, 12]
        v = torch.tanh(self.c3(h[:, :1, :8].reshape(-1, 1, 2, 2, 2)))  # [N, 2, 3, 3, 3]
        s = torch.tanh(self.seq(h.transpose(1, 2)))  # [N, 12, 3]: Linear with extra dim
        return self.head(torch.cat([s.flatten(1), v.flatten(1)], dim=1))


LOSSES = {
    "ce": (lambda: torch.nn.CrossEntropyLoss(), lambda n, g: torch.randint(0, 3, (n,), generator=g)),
    "mse-sum": (lambda: torch.nn.MSELoss(reduction="sum"), lambda n, g: torch.randn(n, 3, generator=g, dtype=DTYPE)),
    "bce": (
        lambda: torch.nn.BCEWithLogitsLoss(),
        lambda n, g: torch.rand(n, 3, generator=g, dtype=DTYPE).round(),
    ),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("fisher", ["type-2", "mc", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("net", ["mixed", "all-kinds"])
def test_streaming_equals_stacked(net, approx, fisher, loss_name):
    make_loss, make_targets = LOSSES[loss_name]
    g = torch.Generator().manual_seed(3)
    if net == "mixed":
        model, x = mixed_net(), torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE)
    else:
        torch.manual_seed(0)
        model, x = AllKinds().to(DTYPE), torch.randn(3, 2, 6, generator=g, dtype=DTYPE)
    targets = make_targets(3, g)
    kfac = KFAC(
        model, make_loss(), approx=approx, fisher=fisher, mc_samples=2, generator=torch.Generator().manual_seed(7)
    )
    kfac.update(x, targets)
    expected = stacked_factors(kfac, x, targets, torch.Generator().manual_seed(7))
    assert list(kfac.factors) == [n for n in kfac.layers if n in expected]
    for name, (A, B) in expected.items():
        torch.testing.assert_close(kfac.factors[name].A, A, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(kfac.factors[name].B, B, rtol=1e-12, atol=1e-13)


def test_factor_dtype_keeps_factors_in_float32_from_float64_passes():
    model, g = mixed_net(), torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (4,), generator=g)
    low = KFAC(model, torch.nn.CrossEntropyLoss(), factor_dtype=torch.float32)
    high = KFAC(model, torch.nn.CrossEntropyLoss())
    low.update(x, t)
    high.update(x, t)
    for name, f in high.factors.items():
        assert low.factors[name].A.dtype == torch.float32 and low.factors[name].B.dtype == torch.float32
        torch.testing.assert_close(low.factors[name].A, f.A.float(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(low.factors[name].B, f.B.float(), rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="factor_dtype"):
        KFAC(model, torch.nn.CrossEntropyLoss(), factor_dtype=torch.int32)


@pytest.mark.parametrize("damping", [0, 0.0, -1e-3, math.inf, math.nan, "1e-3", True])
def test_damping_must_be_finite_and_positive(damping):
    with pytest.raises(ValueError, match="damping"):
        KFAC(torch.nn.Linear(3, 2), torch.nn.MSELoss(), damping=damping)


def test_precondition_and_invert_before_update_raise():
    kfac = KFAC(torch.nn.Linear(3, 2), torch.nn.MSELoss())
    with pytest.raises(RuntimeError, match="update"):
        kfac.precondition()
    with pytest.raises(RuntimeError, match="update"):
        kfac.invert()


class Poisoned(torch.nn.Module):
    """Linear → Linear; ``poison`` puts an inf into the second layer's input only."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
        self.poison = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        if self.poison:  # huge but finite output: the loss stays finite, the factor overflows
            h = h * 1e200
        return self.second(h) * (1e-200 if self.poison else 1.0)


def test_nonfinite_factor_raises_naming_the_layer_or_skips_without_poisoning():
    torch.manual_seed(0)
    model = Poisoned().to(DTYPE)
    x, t = torch.randn(5, 3, dtype=DTYPE), torch.randn(5, 2, dtype=DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss(), ema=0.5)
    kfac.update(x, t)
    model.poison = True
    with pytest.raises(NonFiniteError, match="'second'"):
        kfac.update(x, t)
    before = {n: (f.A.clone(), f.B.clone()) for n, f in kfac.factors.items()}
    skipping = KFAC(model, torch.nn.MSELoss(), ema=0.5, nonfinite="skip")
    model.poison = False
    skipping.update(x, t)
    model.poison = True
    with pytest.warns(RuntimeWarning, match="'second'"):
        skipping.update(x, t)
    for name, (A, B) in before.items():  # the running average is untouched
        torch.testing.assert_close(skipping.factors[name].A, A)
        torch.testing.assert_close(skipping.factors[name].B, B)
    with pytest.raises(ValueError, match="nonfinite"):
        KFAC(model, torch.nn.MSELoss(), nonfinite="ignore")


def test_nonfinite_loss_raises_or_skips():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(DTYPE)
    x, t = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 2, dtype=DTYPE)
    kfac = KFAC(model, torch.nn.MSELoss())
    bad = t.clone()
    bad[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="loss"):
        kfac.update(x, bad)
    assert kfac.factors == {}
    skipping = KFAC(model, torch.nn.MSELoss(), nonfinite="skip")
    skipping.update(x, t)
    kept = skipping.factors[""].A.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = skipping.update(x, bad)
    assert torch.isnan(loss) and any("loss" in str(w.message) for w in caught)
    torch.testing.assert_close(skipping.factors[""].A, kept)


class ModifiesItsInput(torch.nn.Module):
    """A convolution whose input is changed in place after the convolution ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 2, 3)
        self.head = torch.nn.Linear(2 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        x.mul_(2.0)
        return self.head(h.flatten(1))


def test_an_input_modified_in_place_after_its_layer_is_an_error_naming_it():
    torch.manual_seed(0)
    kfac = KFAC(ModifiesItsInput(), torch.nn.CrossEntropyLoss(), fisher="empirical")
    with pytest.raises(RuntimeError, match="'conv'.*modified in place"):
        kfac.update(torch.randn(4, 1, 6), torch.randint(0, 3, (4,)))


def test_A_of_a_layer_no_gradient_reaches_is_still_formed():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].register_forward_hook(lambda m, a, out: out.detach())  # cuts the graph: no B for layer 0
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), fisher="empirical", approx="expand")
    x = torch.randn(5, 3, dtype=DTYPE)
    model.double()
    kfac.update(x, torch.randint(0, 2, (5,)))
    a = torch.cat([x, torch.ones(5, 1, dtype=DTYPE)], 1)
    torch.testing.assert_close(kfac.factors["0"].A, a.T @ a / 5)
    assert not kfac.factors["0"].B.any()


class WideThenDeep(torch.nn.Module):
    """A strided 1×1 convolution on a large input (its input outweighs its A: A formed during
    the backward pass) before a 3×3 convolution and a Linear (small inputs, larger A: formed
    after it)."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = torch.nn.Conv2d(1, 4, 1, stride=4)
        self.deep = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.head = torch.nn.Linear(6 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.deep(torch.tanh(self.wide(x)))).flatten(1))


@pytest.mark.parametrize("when", ["by-size", "always-during-backward", "always-after-backward"])
@pytest.mark.parametrize("fisher", ["type-2", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_A_formed_during_or_after_the_backward_pass_equals_stacked(monkeypatch, when, fisher, approx):
    from tnconv.kfac.layers import KroneckerLayer

    if when != "by-size":  # 0 bytes: holding the input never pays; huge: always does
        size = 0 if when == "always-during-backward" else 2**62
        monkeypatch.setattr(KroneckerLayer, "input_factor_bytes", lambda self, itemsize: size)
    torch.manual_seed(0)
    model, g = WideThenDeep().to(DTYPE), torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 1, 16, 16, generator=g, dtype=DTYPE), torch.randint(0, 3, (3,), generator=g)
    layers = KFAC(model, torch.nn.CrossEntropyLoss()).layers
    if when == "by-size":  # the model does exercise both orders
        assert x.numel() * 8 > layers["wide"].input_factor_bytes(8)
        assert 3 * 4 * 4 * 4 * 8 < layers["deep"].input_factor_bytes(8)
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), approx=approx, fisher=fisher)
    kfac.update(x, t)
    for name, (A, B) in stacked_factors(kfac, x, t, None).items():
        torch.testing.assert_close(kfac.factors[name].A, A, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(kfac.factors[name].B, B, rtol=1e-12, atol=1e-13)


def test_input_factor_bytes_counts_groups_kernel_and_bias():
    from tnconv.kfac.layers import kronecker_layer

    for module, shape in [
        (torch.nn.Conv2d(4, 6, 3, groups=2), (2, 19, 19)),
        (torch.nn.ConvTranspose2d(4, 6, (2, 3), groups=2, bias=False), (2, 12, 12)),
        (torch.nn.Linear(5, 3), (1, 6, 6)),
    ]:
        layer = kronecker_layer(module)
        x = torch.randn(2, 4, 5, 5) if module.weight.dim() > 2 else torch.randn(2, 5)
        assert tuple(layer.input_factor(x, module(x), "expand").shape) == shape
        assert layer.input_factor_bytes(4) == 4 * shape[0] * shape[1] * shape[2]


def test_ema_update_leaves_factors_a_caller_holds_untouched():
    model, g = mixed_net(), torch.Generator().manual_seed(2)
    batches = [
        (torch.randn(3, 2, 7, 7, generator=g, dtype=DTYPE), torch.randint(0, 3, (3,), generator=g)) for _ in range(3)
    ]
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), ema=0.75)
    single = KFAC(model, torch.nn.CrossEntropyLoss())
    expected = None
    for x, t in batches:
        held = {n: (f.A, f.A.clone()) for n, f in kfac.factors.items()}
        kfac.update(x, t)
        single.update(x, t)
        for name, (tensor, copy) in held.items():
            assert torch.equal(tensor, copy)  # an EMA step writes into the new factors only
        new = {n: (f.A.clone(), f.B.clone()) for n, f in single.factors.items()}
        if expected is None:
            expected = new
        else:
            expected = {n: tuple(0.75 * o + 0.25 * w for o, w in zip(expected[n], new[n])) for n in new}
        for name, (A, B) in expected.items():
            torch.testing.assert_close(kfac.factors[name].A, A, rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(kfac.factors[name].B, B, rtol=1e-12, atol=1e-13)
