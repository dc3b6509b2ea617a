"""torch.compile / torch.export / torch.jit.trace through tnconv's custom operators (tnconv.execute.ops).

Compilation is slow on small machines, so the models are few and small and most runs use
the ``aot_eager`` backend (dynamo + AOTAutograd: the graph capture and the backward
graph, without inductor's code generation); one test goes through inductor.
"""

import io
import warnings

import pytest
import torch

import tnconv

DT = torch.float64


class EveryModule(torch.nn.Module):
    """Every tnconv module: 1-d/2-d/3-d/4-d, transposed, bias or not, groups, Unfold/Fold."""

    def __init__(self):
        super().__init__()
        self.c1 = tnconv.nn.Conv1d(2, 4, 3, padding="same", groups=2)
        self.t1 = tnconv.nn.ConvTranspose1d(4, 2, 3, stride=2, bias=False)
        self.c2 = tnconv.nn.Conv2d(2, 4, 3, stride=2, padding=1, padding_mode="circular")
        self.t2 = tnconv.nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2)
        self.c3 = tnconv.nn.Conv3d(2, 2, 2, bias=False, dilation=(1, 2, 1))
        self.t3 = tnconv.nn.ConvTranspose3d(2, 1, 2)
        self.c4 = tnconv.nn.ConvNd(1, 2, (2, 2, 2, 2))
        self.t4 = tnconv.nn.ConvTransposeNd(2, 1, (2, 2, 2, 2), stride=2)
        self.unfold = tnconv.nn.Unfold(2, padding=1)
        self.fold = tnconv.nn.Fold((4, 4), 2)

    def forward(self, x1, x2, x3, x4):
        y1 = self.t1(torch.relu(self.c1(x1)))
        y2 = self.t2(self.c2(x2))
        y3 = self.t3(self.c3(x3))
        y4 = self.t4(self.c4(x4))
        u = self.unfold(y2)
        z = self.fold(u[..., :9])
        return y1.sum() + y2.square().sum() + y3.sum() + y4.sum() + z.sum()


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(2, 2, 9), (2, 2, 8, 8), (1, 2, 5, 6, 4), (1, 1, 3, 3, 3, 3)]
    return [torch.randn(s, dtype=DT, generator=gen) for s in shapes]


def test_dynamo_sees_no_graph_break_and_warns_nothing():
    model = EveryModule().to(DT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = torch._dynamo.explain(model)(*inputs())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    assert [str(w.message) for w in caught] == []


def test_fullgraph_forward_and_backward_equal_eager():
    torch._dynamo.reset()
    model = EveryModule().to(DT)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    xs = [x.requires_grad_() for x in inputs(1)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = compiled(*xs)
        got_grads = torch.autograd.grad(got, [*xs, *model.parameters()])
    expected = model(*xs)
    expected_grads = torch.autograd.grad(expected, [*xs, *model.parameters()])
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b)
    assert [str(w.message) for w in caught] == []


def test_functional_front_ends_compile_with_their_derivatives():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(2, 4, 7, 6, dtype=DT, generator=gen), torch.randn(6, 2, 3, 2, dtype=DT, generator=gen)
    v = torch.randn(3, 2, 6, 4, 7, dtype=DT, generator=gen)  # 3 vectors at once
    options = {"stride": (2, 1), "padding": 1, "groups": 2}

    def everything(x, w, v):
        gx = tnconv.conv_input_vjp(w, v, x.shape, **options)
        gw = tnconv.conv_weight_vjp(x, v, w.shape, **options)
        jx = tnconv.conv_input_jvp(w, x.unsqueeze(0).expand(2, *x.shape), **options)
        jw = tnconv.conv_weight_jvp(x, w.unsqueeze(0), **options)
        u = tnconv.unfold(x, (3, 2), padding=1)
        f = tnconv.fold(u, (7, 6), (3, 2), padding=1)
        return gx, gw, jx, jw, u, f

    compiled = torch.compile(everything, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(x, w, v), everything(x, w, v)):
        torch.testing.assert_close(got, expected)
    # and the same values as torch
    torch.testing.assert_close(compiled(x, w, v)[1][0], torch.nn.grad.conv2d_weight(x, w.shape, v[0], **options))


def test_double_backward_through_the_operators():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, dtype=DT, generator=gen, requires_grad=True)
    w = torch.randn(3, 2, 3, dtype=DT, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=DT, generator=gen, requires_grad=True)
    opts = ([2], [1], "", [1], 1, "auto")
    torch.autograd.gradgradcheck(lambda x, w, b: tnconv.execute.ops.conv(x, w, b, *opts), (x, w, b))
    wt = torch.randn(2, 3, 3, dtype=DT, generator=gen, requires_grad=True)
    topts = ([2], [1], [1], 1, [1], "auto")
    torch.autograd.gradgradcheck(lambda x, w: tnconv.execute.ops.conv_transpose(x, w, None, *topts), (x, wt))


@pytest.mark.parametrize(
    "op, args",
    [
        ("conv", lambda t: (t(2, 4, 7), t(6, 2, 3), t(6), [2], [1], "", [1], 2, "auto")),
        ("conv", lambda t: (t(1, 2, 5, 5), t(3, 2, 3, 3), None, [1, 1], [0, 0], "same", [1, 2], 1, "auto")),
        ("conv_transpose", lambda t: (t(2, 4, 4), t(4, 3, 3), t(6), [2], [1], [1], 2, [1], "auto")),
        ("conv_input_vjp", lambda t: (t(6, 2, 3), t(2, 6, 4), [2, 4, 7], [2], [1], "", [1], 2, "auto")),
        ("conv_weight_vjp", lambda t: (t(2, 4, 7), t(2, 6, 4), [6, 2, 3], [2], [1], "", [1], 2, "auto")),
        ("unfold", lambda t: (t(2, 3, 5, 4), [2, 2], [1, 1], [1, 0], "", [2, 1], "auto")),
        ("fold", lambda t: (t(2, 12, 9), [5, 4], [2, 2], [1, 1], [1, 0], "", [2, 1], "auto")),
    ],
)
def test_operators_pass_torch_library_opcheck(op, args):
    gen = torch.Generator().manual_seed(4)
    arguments = args(lambda *shape: torch.randn(shape, dtype=DT, generator=gen, requires_grad=True))
    torch.library.opcheck(getattr(torch.ops.tnconv, op).default, arguments)


def test_torch_export_round_trip():
    model = torch.nn.Sequential(
        tnconv.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), tnconv.nn.ConvTranspose2d(4, 2, 2, stride=2)
    ).to(DT)
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    exported = torch.export.export(model, (x,))
    names = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"tnconv.conv.default", "tnconv.conv_transpose.default"} <= names
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    x2 = torch.randn(2, 3, 6, 6, dtype=DT)
    torch.testing.assert_close(loaded.module()(x2), model(x2))


def test_inductor_compiles_a_conv_layer_forward_and_backward():
    torch._dynamo.reset()
    layer = tnconv.nn.Conv2d(2, 3, 3, padding=1)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    y = compiled(x)
    y.square().sum().backward()
    grads = x.grad.clone(), layer.weight.grad.clone()
    x.grad = layer.weight.grad = layer.bias.grad = None
    layer(x).square().sum().backward()
    torch.testing.assert_close(y, layer(x))
    torch.testing.assert_close(grads, (x.grad, layer.weight.grad))


def test_jit_trace_records_the_operators_and_generalizes_over_values():
    model = torch.nn.Sequential(
        tnconv.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), tnconv.nn.ConvTranspose2d(4, 2, 3, stride=2), tnconv.nn.Unfold(2)
    )
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, x)
    assert [str(w.message) for w in caught if "deprecated" not in str(w.message)] == []
    x2 = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(traced(x2), model(x2))
    assert "tnconv::conv" in str(traced.inlined_graph)


def test_curvature_factors_compile_and_accumulate_in_float32_under_autocast():
    torch._dynamo.reset()
    x = torch.randn(2, 4, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(5))

    def factors(x):
        return (
            tnconv.kfc_factor(x, 3, padding="same", groups=2, bias=True),
            tnconv.kfac_reduce_factor(x, (3, 2), stride=2),
            tnconv.kfc_factor_transpose(x, 2, stride=2, groups=2),
            tnconv.kfac_reduce_factor_transpose(x, 3, padding=1, output_padding=0, bias=True),
            tnconv.output_grad_factor(x, "reduce", 2),
        )

    explanation = torch._dynamo.explain(factors)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(factors, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(x), factors(x)):
        torch.testing.assert_close(got, expected)
    with torch.autocast("cpu", torch.bfloat16):
        low = factors(x.float().bfloat16())
    for got, expected in zip(low, factors(x.bfloat16().double())):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    opcheck_args = (x, "expand", [3, 3], [1, 1], [1, 1], "", [1, 1], 2, True)
    torch.library.opcheck(torch.ops.tnconv.input_factor.default, opcheck_args)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_jit_trace_of_padding_modes_records_no_tracer_warning(mode):
    for dims in (1, 2, 3):
        torch.manual_seed(dims)
        ref = getattr(torch.nn, f"Conv{dims}d")(2, 3, 3, padding=(1,) * (dims - 1) + (2,), padding_mode=mode)
        mine = getattr(tnconv.nn, f"Conv{dims}d")(2, 3, 3, padding=(1,) * (dims - 1) + (2,), padding_mode=mode)
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(2, 2, *[5] * dims)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traced = torch.jit.trace(mine, x)
        assert [str(w.message) for w in caught if "deprecated" not in str(w.message)] == []
        x2 = torch.randn(2, 2, *[5] * dims)
        torch.testing.assert_close(traced(x2), ref(x2))
