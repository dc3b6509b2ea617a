"""Drop-in behaviour under PyTorch's own machinery: autocast, torch.func, complex tensors,
unbatched inputs, convert/revert."""

import copy

import pytest
import torch

import tnconv

DT = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ autocast
AUTOCAST_CASES = [
    (lambda nn: nn.Conv2d(3, 4, 3, padding=1, groups=1), (2, 3, 8, 8)),
    (lambda nn: nn.Conv1d(4, 6, 3, stride=2, groups=2), (2, 4, 9)),
    (lambda nn: nn.ConvTranspose2d(4, 2, 3, stride=2), (2, 4, 5, 5)),
]


def _autocast_pair(make, x, device="cpu", dtype=torch.bfloat16):
    """Outputs and parameter gradients of tnconv's and torch's module under autocast."""
    torch.manual_seed(0)
    ref = make(torch.nn)
    mine = make(tnconv.nn)
    mine.load_state_dict(ref.state_dict())
    results = []
    for module in (mine, ref):
        with torch.autocast(device, dtype):
            y = module(x)
        y.float().square().sum().backward()
        results.append((y, [p.grad for p in module.parameters()]))
    with torch.no_grad():
        exact = ref.float()(x.float())
    return results, exact


@pytest.mark.parametrize("make, shape", AUTOCAST_CASES)
def test_autocast_bfloat16_on_cpu_follows_torch(make, shape):
    x = torch.randn(shape, generator=gen())
    ((y, grads), (y_ref, grads_ref)), exact = _autocast_pair(make, x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    # as close to float32 as torch's own conv under autocast (bfloat16 has 8 bits of mantissa)
    error, error_ref = (y.float() - exact).abs().max(), (y_ref.float() - exact).abs().max()
    assert error <= 4 * error_ref + 1e-2
    for g, g_ref in zip(grads, grads_ref):
        assert g.dtype == g_ref.dtype == torch.float32  # float32 parameters get float32 gradients
        torch.testing.assert_close(g, g_ref, rtol=5e-2, atol=5e-2 * g_ref.abs().max().item())


def test_autocast_leaves_float64_and_disabled_autocast_alone():
    x, w = torch.randn(1, 2, 6, dtype=DT), torch.randn(3, 2, 3, dtype=DT)
    with torch.autocast("cpu", torch.bfloat16):
        assert tnconv.conv(x, w).dtype == DT  # torch does not cast float64 either
        assert tnconv.conv(x.float(), w.float()).dtype == torch.bfloat16
    with torch.autocast("cpu", torch.bfloat16, enabled=False):
        assert tnconv.conv(x.float(), w.float()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make, shape", AUTOCAST_CASES)
def test_autocast_float16_on_cuda_follows_torch(make, shape):
    x = torch.randn(shape, generator=gen()).cuda()
    ((y, grads), (y_ref, grads_ref)), exact = _autocast_pair(
        lambda nn: make(nn).cuda(), x, device="cuda", dtype=torch.float16
    )
    assert y.dtype == y_ref.dtype == torch.float16 and y.device == x.device
    # as close to float32 as torch's own conv under autocast (float16 has 11 bits of mantissa)
    assert (y.float() - exact).abs().max() <= 4 * (y_ref.float() - exact).abs().max() + 1e-2
    for g, g_ref in zip(grads, grads_ref):
        assert g.dtype == g_ref.dtype == torch.float32
        torch.testing.assert_close(g, g_ref, rtol=1e-2, atol=1e-2 * g_ref.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_float16_on_cuda_with_randomized_backward():
    # the seed is drawn on the CPU; the estimators' generator is a CUDA one seeded with it
    torch.manual_seed(0)
    layer = tnconv.nn.Conv2d(3, 4, 3, padding=1, backward_keep=0.5, backward_input_keep=0.5).cuda()
    x = torch.randn(4, 3, 8, 8, device="cuda", requires_grad=True)

    def step():
        torch.manual_seed(1)
        with torch.autocast("cuda", torch.float16):
            y = layer(x)
        return y, torch.autograd.grad(y.float().sum(), [x, layer.weight])

    (y, grads), (y_again, grads_again) = step(), step()
    assert y.dtype == torch.float16 and [g.dtype for g in grads] == [torch.float32, torch.float32]
    torch.testing.assert_close(y, y_again, rtol=0, atol=0)
    for a, b in zip(grads, grads_again):  # the same seed, the same draw
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------ torch.func
def test_torch_func_transforms_agree_with_torch():
    x = torch.randn(2, 3, 7, dtype=DT, generator=gen(1))
    w = torch.randn(4, 3, 3, dtype=DT, generator=gen(2))

    def mine(w, x):
        return tnconv.conv(x, w, stride=2, padding=1).sin().sum()

    def ref(w, x):
        return torch.nn.functional.conv1d(x, w, stride=2, padding=1).sin().sum()

    torch.testing.assert_close(torch.func.grad(mine)(w, x), torch.func.grad(ref)(w, x))
    torch.testing.assert_close(torch.func.jacrev(mine, argnums=1)(w, x), torch.func.jacrev(ref, argnums=1)(w, x))
    tangent = torch.randn_like(w)
    torch.testing.assert_close(torch.func.jvp(mine, (w, x), (tangent, torch.zeros_like(x))),
                               torch.func.jvp(ref, (w, x), (tangent, torch.zeros_like(x))))  # fmt: skip
    per_sample = torch.func.vmap(torch.func.grad(mine), in_dims=(None, 0))(w, x.unsqueeze(1))
    expected = torch.stack([torch.func.grad(ref)(w, xi.unsqueeze(0)) for xi in x])
    torch.testing.assert_close(per_sample, expected)


# ------------------------------------------------------------------ complex
@pytest.mark.parametrize("dims", [1, 2])
def test_complex_conv_equals_torch_and_passes_gradcheck(dims):
    g = gen(3)
    x = torch.randn(2, 4, *(5,) * dims, dtype=torch.complex128, generator=g, requires_grad=True)
    w = torch.randn(6, 2, *(3,) * dims, dtype=torch.complex128, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.complex128, generator=g, requires_grad=True)
    conv = getattr(torch.nn.functional, f"conv{dims}d")
    y, ref = tnconv.conv(x, w, b, stride=2, padding=1, groups=2), conv(x, w, b, stride=2, padding=1, groups=2)
    torch.testing.assert_close(y, ref)
    v = torch.randn(ref.shape, dtype=torch.complex128, generator=g)
    for mine, theirs in zip(torch.autograd.grad(y, (x, w, b), v), torch.autograd.grad(ref, (x, w, b), v)):
        torch.testing.assert_close(mine, theirs)  # torch conjugates: grad = Jᴴ v
    assert torch.autograd.gradcheck(lambda x, w, b: tnconv.conv(x, w, b, stride=2, groups=2), (x, w, b))


def test_complex_conv_transpose_and_unfold_gradcheck():
    g = gen(4)
    x = torch.randn(1, 2, 4, dtype=torch.complex128, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 3, dtype=torch.complex128, generator=g, requires_grad=True)
    torch.testing.assert_close(
        tnconv.conv_transpose(x, w, stride=2), torch.nn.functional.conv_transpose1d(x, w, stride=2)
    )
    assert torch.autograd.gradcheck(lambda x, w: tnconv.conv_transpose(x, w, stride=2), (x, w))
    assert torch.autograd.gradcheck(lambda x: tnconv.unfold(x, 2, stride=2), (x,))


# ------------------------------------------------------------------ unbatched
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda nn: nn.Conv1d(2, 3, 3, padding=1), (2, 7)),
        (lambda nn: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 6)),
        (lambda nn: nn.Conv3d(2, 4, 2, groups=2), (2, 4, 3, 5)),
        (lambda nn: nn.ConvTranspose1d(2, 3, 3, stride=2), (2, 4)),
        (lambda nn: nn.ConvTranspose2d(2, 4, 2, stride=2, groups=2), (2, 3, 3)),
        (lambda nn: nn.ConvTranspose3d(2, 1, 2), (2, 2, 3, 2)),
        (lambda nn: nn.Unfold(2, padding=1), (3, 4, 5)),
        (lambda nn: nn.Fold((4, 5), 2), (12, 12)),
    ],
)
def test_unbatched_inputs_give_torch_shapes_and_values(make, shape):
    torch.manual_seed(0)
    ref, mine = make(torch.nn).double(), make(tnconv.nn).double()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(shape, dtype=DT, generator=gen(5))
    torch.testing.assert_close(mine(x), ref(x))


def test_unbatched_functional_convolutions():
    x, w = torch.randn(3, 6, 6, dtype=DT), torch.randn(4, 3, 3, 3, dtype=DT)
    torch.testing.assert_close(tnconv.conv2d(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1))
    torch.testing.assert_close(tnconv.conv(x, w), torch.nn.functional.conv2d(x, w))
    wt = torch.randn(3, 2, 2, 2, dtype=DT)
    torch.testing.assert_close(tnconv.conv_transpose2d(x, wt, stride=2),
                               torch.nn.functional.conv_transpose2d(x, wt, stride=2))  # fmt: skip


# ------------------------------------------------------------------ convert / revert
class Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, stride=2, groups=2, bias=False),
        )
        self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.head = torch.nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.up(self.body(x)).flatten(1))


def test_convert_and_revert_round_trip_keep_state_hooks_and_mode():
    torch.manual_seed(0)
    model = Mixed().double().eval()
    x = torch.randn(2, 3, 7, 7, dtype=DT, generator=gen(6))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model.body[0].register_forward_hook(lambda *args: calls.append(1))
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    weight = model.body[0].weight

    assert tnconv.nn.convert(model) is model
    assert type(model.body[0]) is tnconv.nn.Conv2d and type(model.up) is tnconv.nn.ConvTranspose2d
    assert type(model.head) is torch.nn.Linear and not model.training
    assert model.body[0].weight is weight  # the same Parameter: optimizers keep working
    assert repr(model.body[0]).startswith("tnconv.nn.Conv2d(3, 4")
    got = model(x)
    torch.testing.assert_close(got, expected)
    for a, b in zip(torch.autograd.grad(got.square().sum(), list(model.parameters())), expected_grads):
        torch.testing.assert_close(a, b)
    assert len(calls) == 2 and model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])

    tnconv.nn.revert(model)
    assert type(model.body[0]) is torch.nn.Conv2d and type(model.up) is torch.nn.ConvTranspose2d
    assert "backward_keep" not in vars(model.body[0])
    torch.testing.assert_close(model(x), expected)


def test_convert_passes_randomized_backward_options_and_validates_them():
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.ConvTranspose1d(3, 2, 3))
    tnconv.nn.convert(model, backward_keep=0.5, backward_leg="batch")
    assert model[0].randomized_backward and model[0].backward_leg == "batch"
    with pytest.raises(ValueError, match="backward_keep"):
        tnconv.nn.convert(torch.nn.Conv1d(1, 1, 1), backward_keep=0.0)
    with pytest.raises(TypeError, match="model"):
        tnconv.nn.convert([torch.nn.Conv1d(1, 1, 1)])


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_autocast_through_a_stack_of_layers_exact_and_randomized(keep):
    # the second layer gets a bfloat16 input and a float32 weight: autocast casts before any dtype check
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, bias=False))
    mine = tnconv.nn.convert(copy.deepcopy(ref), backward_keep=keep)
    x = torch.randn(2, 3, 8, 8, generator=gen(7))
    with torch.autocast("cpu", torch.bfloat16):
        y, y_ref = mine(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0.05, atol=0.05)
    y.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in mine.parameters())
