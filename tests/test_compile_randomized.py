"""Randomized backpropagation under torch.compile / torch.jit.trace / torch.export
(tnconv.randomized.ops): no graph breaks, the eager gradients for the same generator state.

The semantics under test: one seed per call, drawn from the generator (the global CPU
generator when none is given); the estimators draw from a generator seeded with it — the
input VJP's subset first, then the weight VJP's. Compiled graphs do the same through the
operators, so compiled and eager results are *equal*, not only equal in distribution (the
eager estimators' unbiasedness is tested in test_randomized.py). Most runs use the
``aot_eager`` backend (dynamo + AOTAutograd); one goes through inductor.
"""

import io
import warnings

import pytest
import torch

import tnconv
from tnconv.randomized import estimators
from tnconv.randomized.ops import draw, seeded

DT = torch.float64
R = tnconv.randomized


class Randomized(torch.nn.Module):
    """Every module kind with a randomized backward: 1-d/2-d/3-d/4-d, transposed, bias or
    not, groups, every weight leg, a randomized input gradient, both modes."""

    def __init__(self):
        super().__init__()
        self.c1 = tnconv.nn.Conv1d(2, 4, 3, padding=1, groups=2, backward_keep=0.5, backward_leg="batch")
        self.t1 = tnconv.nn.ConvTranspose1d(4, 2, 3, stride=2, bias=False, backward_keep=0.5, backward_mode="fixed")
        self.c2 = tnconv.nn.Conv2d(
            2, 4, 3, padding=1, padding_mode="circular", backward_keep=0.5, backward_input_keep=0.5
        )
        self.t2 = tnconv.nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2, backward_keep=0.4, backward_leg="spatial:1")
        self.c3 = tnconv.nn.Conv3d(
            2, 2, 2, bias=False, backward_keep=0.3, backward_leg="spatial:2", backward_mode="fixed"
        )
        self.c4 = tnconv.nn.ConvNd(1, 2, (2, 2, 2, 2), backward_keep=0.5, backward_leg="positions")
        self.t4 = tnconv.nn.ConvTransposeNd(2, 1, (2, 2, 2, 2), stride=2, backward_keep=0.5)

    def forward(self, x1, x2, x3, x4):
        y1 = self.t1(torch.relu(self.c1(x1)))
        y2 = self.t2(self.c2(x2))
        y4 = self.t4(self.c4(x4))
        return y1.square().sum() + y2.square().sum() + self.c3(x3).square().sum() + y4.square().sum()


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 2, 9), (2, 2, 8, 8), (1, 2, 5, 6, 4), (1, 1, 3, 3, 3, 3)]
    return [torch.randn(s, dtype=DT, generator=gen).requires_grad_() for s in shapes]


def gradients(model, xs, seed):
    torch.manual_seed(seed)
    loss = model(*xs)
    loss = loss if loss.dim() == 0 else loss.square().sum()
    return loss, torch.autograd.grad(loss, [*xs, *model.parameters()])


def test_randomized_modules_compile_without_graph_breaks_or_warnings():
    torch._dynamo.reset()
    model = Randomized().to(DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = torch._dynamo.explain(model)(*inputs())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    assert [str(w.message) for w in caught] == []


def test_fullgraph_randomized_backward_equals_eager_for_the_same_seed():
    torch._dynamo.reset()
    model = Randomized().to(DT)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    xs = inputs(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [gradients(compiled, xs, seed) for seed in (3, 4)]
    assert [str(w.message) for w in caught] == []
    expected = [gradients(model, xs, seed) for seed in (3, 4)]
    for (loss, grads), (loss_ref, grads_ref) in zip(got, expected):
        torch.testing.assert_close(loss, loss_ref, rtol=0, atol=0)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # a new seed is a new draw: the weight gradients of the two steps differ
    weights = [p is model.c2.weight for p in [*xs, *model.parameters()]].index(True)
    assert not torch.allclose(got[0][1][weights], got[1][1][weights])


def test_inductor_randomized_layer_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = tnconv.nn.Conv2d(3, 4, 3, padding=1, backward_keep=0.5, backward_input_keep=0.5)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    got = gradients(compiled, [x], 5)
    expected = gradients(layer, [x], 5)
    torch.testing.assert_close(got[0], expected[0])
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _functional(x, v, w, xt, vt, generator):
    options = {"stride": (2, 1), "padding": 1, "groups": 2}
    return (
        R.conv_weight_vjp(x, v, 3, **options, keep=0.5, generator=generator),
        R.conv_weight_vjp(x, v, (3, 3), **options, keep=0.4, leg="batch", mode="fixed", generator=generator),
        R.conv_weight_vjp(x, v, 3, **options, keep=0.5, leg="positions"),  # the global generator
        R.conv_input_vjp(w, v, x.shape, **options, keep=0.5, leg="spatial", generator=generator),
        R.conv_input_vjp(w, v, x.shape[2:], **options, keep=0.5, leg="channel", mode="fixed", generator=generator),
        R.conv_transpose_weight_vjp(xt, vt, 3, 2, 1, 1, 2, keep=0.5, generator=generator),
    )


def test_functional_randomized_vjps_compile_and_follow_their_generator():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 9, 8, dtype=DT, generator=gen), torch.randn(3, 4, 5, 8, dtype=DT, generator=gen)
    w = torch.randn(4, 2, 3, 3, dtype=DT, generator=gen)
    xt, vt = torch.randn(2, 4, 5, 5, dtype=DT, generator=gen), torch.randn(2, 6, 10, 10, dtype=DT, generator=gen)
    first, second = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = torch._dynamo.explain(_functional)(x, v, w, xt, vt, first)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert [str(w.message) for w in caught] == []
    compiled = torch.compile(_functional, fullgraph=True, backend="aot_eager")
    for generator, seed in [(first, 5), (first, 6), (second, 5)]:  # another generator object: a recompilation
        generator.manual_seed(seed)
        torch.manual_seed(seed)
        got = compiled(x, v, w, xt, vt, generator)
        generator.manual_seed(seed)
        torch.manual_seed(seed)
        expected = _functional(x, v, w, xt, vt, generator)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # every generator's state moved on by one draw per call
    first.manual_seed(5)
    again = compiled(x, v, w, xt, vt, first)
    assert not torch.equal(again[0], compiled(x, v, w, xt, vt, first)[0])


def test_eager_semantics_one_seed_per_call():
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(4, 2, 9, 8, dtype=DT, generator=gen), torch.randn(4, 3, 7, 6, dtype=DT, generator=gen)
    generator, replay = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    got = R.conv_weight_vjp(x, v, 3, keep=0.5, generator=generator)
    expected = estimators.conv_weight_vjp(x, v, 3, keep=0.5, generator=seeded(draw(replay), x.device))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(generator.get_state(), replay.get_state())  # one draw from the user's generator
    # a module: one seed per forward; the backward draws the input VJP's subset, then the weight VJP's
    layer = tnconv.nn.Conv2d(2, 3, 3, dtype=DT, backward_keep=0.5, backward_input_keep=0.5, backward_mode="fixed")
    torch.manual_seed(4)
    grad_x, grad_w = torch.autograd.grad(layer(x.requires_grad_()), [x, layer.weight], v)
    torch.manual_seed(4)
    local = seeded(draw(None), x.device)
    weight = layer.weight.detach()
    expected_x = estimators.conv_input_vjp(weight, v, x.shape, keep=0.5, mode="fixed", generator=local)
    expected_w = estimators.conv_weight_vjp(x.detach(), v, 3, keep=0.5, mode="fixed", generator=local)
    torch.testing.assert_close(grad_x, expected_x, rtol=0, atol=0)
    torch.testing.assert_close(grad_w, expected_w, rtol=0, atol=0)


SEED = torch.tensor(123, dtype=torch.int64)


@pytest.mark.parametrize(
    "op, args",
    [
        (
            "randomized_conv_weight_vjp",
            lambda t: (t(2, 4, 7), t(2, 6, 4), [3], [2], [1], "", [1], 2, 0.5, "spatial", "bernoulli", SEED),
        ),
        (
            "randomized_conv_weight_vjp",
            lambda t: (
                t(2, 4, 7, 6),
                t(2, 6, 7, 6),
                [3, 3],
                [1, 1],
                [0, 0],
                "same",
                [1, 1],
                2,
                0.5,
                "batch",
                "fixed",
                SEED,
            ),
        ),
        (
            "randomized_conv_weight_vjp",
            lambda t: (
                t(2, 2, 6, 6),
                t(2, 3, 4, 4),
                [3, 3],
                [1, 1],
                [0, 0],
                "",
                [1, 1],
                1,
                0.3,
                "positions",
                "fixed",
                SEED,
            ),
        ),
        (
            "randomized_conv_input_vjp",
            lambda t: (t(6, 2, 3), t(2, 6, 4), [2, 4, 7], [2], [1], "", [1], 2, 0.5, "channel", "fixed", SEED),
        ),
        (
            "randomized_conv_input_vjp",
            lambda t: (
                t(6, 2, 3, 3),
                t(2, 6, 8, 6),
                [8, 6],
                [1, 1],
                [1, 1],
                "",
                [1, 1],
                2,
                0.5,
                "spatial",
                "bernoulli",
                SEED,
            ),
        ),
        (
            "randomized_conv_transpose_weight_vjp",
            lambda t: (t(2, 4, 4), t(2, 6, 8), [3], [2], [1], [1], 2, [1], 0.5, "spatial", "bernoulli", SEED),
        ),
        (
            "randomized_conv",
            lambda t: (
                t(2, 4, 7, g=True),
                t(6, 2, 3, g=True),
                t(6, g=True),
                [2],
                [1],
                "",
                [1],
                2,
                0.5,
                "spatial",
                "bernoulli",
                0.5,
                "channel",
                SEED,
            ),
        ),
        (
            "randomized_conv_backward",
            lambda t: (
                t(2, 4, 7),
                t(6, 2, 3),
                t(2, 6, 4),
                [2],
                [1],
                "",
                [1],
                2,
                0.5,
                "spatial",
                "bernoulli",
                0.5,
                "channel",
                SEED,
                [True, True],
            ),
        ),
        (
            "randomized_conv_backward",
            lambda t: (
                t(2, 4, 7),
                t(6, 2, 3),
                t(2, 6, 7),
                [1],
                [0, 0],
                "same",
                [1],
                2,
                0.5,
                "batch",
                "fixed",
                1.0,
                "channel",
                SEED,
                [False, True],
            ),
        ),
        (
            "randomized_conv_transpose",
            lambda t: (
                t(2, 4, 4, g=True),
                t(4, 3, 3, g=True),
                t(6, g=True),
                [2],
                [1],
                [1],
                2,
                [1],
                0.5,
                "spatial",
                "fixed",
                SEED,
            ),
        ),
    ],
)
def test_randomized_operators_pass_opcheck(op, args):
    gen = torch.Generator().manual_seed(4)
    arguments = args(lambda *shape, g=False: torch.randn(shape, dtype=DT, generator=gen, requires_grad=g))
    torch.library.opcheck(getattr(torch.ops.tnconv, op).default, arguments)


def test_draw_seed_operator():
    # random by design: only its schema and fake implementation can be checked by opcheck
    result = torch.library.opcheck(
        torch.ops.tnconv.draw_seed.default, (torch.ones(2), 0), test_utils=("test_schema", "test_faketensor")
    )
    assert set(result.values()) == {"SUCCESS"}
    torch.manual_seed(3)
    seed = torch.ops.tnconv.draw_seed(torch.ones(2), 0)
    torch.manual_seed(3)
    assert seed.dtype == torch.int64 and seed.shape == () and torch.equal(seed, draw(None))
    with pytest.raises(ValueError, match="generator key"):
        torch.ops.tnconv.draw_seed(torch.ones(2), 12345)


def test_fake_implementations_reject_what_eager_rejects():
    x, v = torch.randn(2, 4, 7), torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match="v must have the convolution's output shape"):
        torch.ops.tnconv.randomized_conv_weight_vjp(x, v, [3], [2], [1], "", [1], 2, 0.5, "spatial", "bernoulli", SEED)
    compiled = torch.compile(
        lambda x, v: R.conv_weight_vjp(x, v, 3, keep=0.5, leg="channel"), fullgraph=True, backend="aot_eager"
    )
    with pytest.raises(Exception, match="leg must be one of"):
        compiled(torch.randn(2, 4, 7), torch.randn(2, 6, 5))


def test_jit_trace_and_export_of_randomized_modules():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tnconv.nn.Conv2d(3, 4, 3, backward_keep=0.5),
        torch.nn.ReLU(),
        tnconv.nn.ConvTranspose2d(4, 2, 3, stride=2, backward_keep=0.5),
    )
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, x)
    assert [str(w.message) for w in caught if "deprecated" not in str(w.message)] == []
    assert "tnconv::draw_seed" in str(traced.inlined_graph)
    got, expected = gradients(traced, [x], 1)[1], gradients(model, [x], 1)[1]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = x.detach()
    exported = torch.export.export(model, (x,))
    names = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"tnconv.draw_seed.default", "tnconv.randomized_conv.default"} <= names
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.export.load(buffer).module()(x), model(x))


def test_compiled_randomized_backward_under_autocast():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tnconv.nn.Conv2d(3, 4, 3, backward_keep=0.5), torch.nn.ReLU(), tnconv.nn.Conv2d(4, 2, 3)
    )
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 8, 8)

    def step(module):
        torch.manual_seed(2)
        with torch.autocast("cpu", torch.bfloat16):
            y = module(x)
        return y, torch.autograd.grad(y.float().sum(), list(model.parameters()))

    (y, grads), (y_ref, grads_ref) = step(compiled), step(model)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    # bfloat16 rounding may differ between the graph and eager; a different draw would differ by O(1)
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0.02, atol=0.01)
    for a, b in zip(grads, grads_ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.01)


def test_keep_that_dynamo_makes_dynamic_still_compiles_and_equals_eager():
    # a second model whose keep differs from the first's: dynamo's automatic dynamic turns the
    # module attribute into a symbolic float, which must flow into the operator unchecked
    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 8, dtype=DT, requires_grad=True)
    for keep in (0.5, 0.25):
        torch.manual_seed(0)
        model = torch.nn.Sequential(tnconv.nn.Conv2d(3, 4, 3, dtype=DT, backward_keep=keep), torch.nn.ReLU())
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        got, expected = gradients(compiled, [x], 1), gradients(model, [x], 1)
        for a, b in zip(got[1], expected[1]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="backward_keep must be in"):
        tnconv.nn.Conv2d(3, 4, 3, backward_keep=float("nan"))
