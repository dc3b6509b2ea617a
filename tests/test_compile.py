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
        ("unfold_transpose", lambda t: (t(2, 3, 4, 5), [3, 2], [2, 1], [1, 0], [1, 0], [1, 2], "auto")),
        (
            "unfold_transpose_vjp",
            lambda t: (t(2, 18, 56), [2, 3, 4, 5], [3, 2], [2, 1], [1, 0], [1, 0], [1, 2], "auto"),
        ),
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
            tnconv.kfac_reduce_root(x, 3, padding=1, groups=2, bias=True),
            tnconv.kfac_reduce_root_transpose(x, 2, stride=2),
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


def test_weight_statistics_and_unfold_transpose_compile_without_graph_breaks():
    # per-sample gradients, their second moment, the GGN diagonal / Gram matrix (with and
    # without bias) and unfold_transpose: one operator each under dynamo, values as eager.
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, 7, 6, dtype=DT, generator=gen)
    v = torch.randn(3, 6, 4, 7, dtype=DT, generator=gen)  # stride (2, 1), padding 1, kernel (3, 2)
    s = torch.randn(2, 3, 6, 4, 7, dtype=DT, generator=gen)
    options = {"stride": (2, 1), "padding": 1, "groups": 2}

    def statistics(x, v, s):
        return (
            tnconv.per_sample_weight_grad(x, v, (3, 2), **options, bias=True),
            tnconv.grad_second_moment(x, v, (3, 2), **options),
            tnconv.ggn_diagonal(x, s, (3, 2), **options, bias=True),
            tnconv.ggn_gram(x, s, (3, 2), **options, bias=True),
            tnconv.unfold_transpose(x, (3, 2), stride=2, padding=1, output_padding=(1, 0), dilation=(1, 2)),
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = torch._dynamo.explain(statistics)(x, v, s)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert [str(w.message) for w in caught] == []
    called = {str(node.target).removesuffix(".default") for graph in explanation.graphs for node in graph.graph.nodes}
    assert {"tnconv.weight_statistic", "tnconv.unfold_transpose"} <= called, called
    compiled = torch.compile(statistics, fullgraph=True, backend="aot_eager")
    got, expected = compiled(x, v, s), statistics(x, v, s)
    torch.testing.assert_close(got, expected)
    # independent of tnconv's eager path: the per-sample gradients sum to torch's weight gradient
    torch.testing.assert_close(got[0][0].sum(0), torch.nn.grad.conv2d_weight(x, (6, 2, 3, 2), v, **options))
    torch.testing.assert_close(got[1], got[0][0].square().sum(0))


def test_unfold_transpose_operator_backward_equals_eager_and_is_twice_differentiable():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 4, 5, dtype=DT, generator=gen, requires_grad=True)

    def cols(x):
        return tnconv.unfold_transpose(x, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0))

    compiled = torch.compile(cols, fullgraph=True, backend="aot_eager")
    (got,) = torch.autograd.grad(compiled(x).square().sum(), x)
    (expected,) = torch.autograd.grad(cols(x).square().sum(), x)
    torch.testing.assert_close(got, expected)
    arguments = ([3, 2], [2, 1], [1, 0], [1, 0], [1, 1], "auto")
    torch.autograd.gradgradcheck(lambda x: tnconv.execute.ops.unfold_transpose(x, *arguments), (x,))


@pytest.mark.parametrize(
    "args",
    [
        lambda t: (t(2, 4, 6), t(2, 6, 3), "per_sample_weight_grad", [3], [2], [1], "", [1], 2),
        lambda t: (t(2, 4, 6), t(2, 6, 6), "grad_second_moment", [3], [1], [0], "same", [1], 1),
        lambda t: (t(2, 4, 5, 5), t(3, 2, 2, 4, 4), "ggn_diagonal", [2, 2], [1, 1], [0, 0], "", [1, 1], 2),
        lambda t: (t(2, 4, 5), t(3, 2, 6, 3), "ggn_gram", [3], [1], [0], "", [1], 1),
    ],
)
def test_weight_statistic_operator_passes_opcheck(args):
    # statistics, not differentiated (no autograd formula, as the input factors): plain tensors
    gen = torch.Generator().manual_seed(9)
    arguments = args(lambda *shape: torch.randn(shape, dtype=DT, generator=gen))
    torch.library.opcheck(torch.ops.tnconv.weight_statistic.default, arguments)


def test_weight_statistic_operator_rejects_an_unknown_statistic():
    x, v = torch.randn(2, 3, 6), torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match="statistic must be one of"):
        torch.ops.tnconv.weight_statistic(x, v, "hessian", [3], [1], [0], "", [1], 1)


def test_unfold_transpose_adjoint_operator_names_a_wrongly_shaped_grad():
    with pytest.raises(ValueError, match=r"grad must have shape \(2, 9, 8\)"):
        torch.ops.tnconv.unfold_transpose_vjp(torch.randn(2, 9, 7), [2, 3, 6], [3], [1], [0], [0], [1], "auto")


def test_weight_statistics_export_and_jit_trace():
    class Statistics(torch.nn.Module):
        def forward(self, x, s):
            return tnconv.ggn_diagonal(x, s, 3, padding=1, bias=True), tnconv.grad_second_moment(x, s[0], 3, padding=1)

    gen = torch.Generator().manual_seed(10)
    x, s = torch.randn(2, 3, 6, 6, dtype=DT, generator=gen), torch.randn(4, 2, 5, 6, 6, dtype=DT, generator=gen)
    x2 = torch.randn(2, 3, 6, 6, dtype=DT, generator=gen)
    exported = torch.export.export(Statistics(), (x, s))
    traced = torch.jit.trace(Statistics(), (x, s))
    for module in (exported.module(), traced):
        torch.testing.assert_close(module(x2, s), Statistics()(x2, s))


def test_kfac_optimizer_steps_a_compiled_model_as_an_eager_one():
    # KFAC's update runs its own eager passes on the model; the training step itself may be compiled
    def build():
        torch.manual_seed(11)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 10)
        )
        net = tnconv.nn.convert(net.to(DT))
        loss_fn = torch.nn.CrossEntropyLoss()
        optimizer = tnconv.kfac.KFACOptimizer(
            net, loss_fn, torch.optim.SGD(net.parameters(), lr=0.1), approx="reduce", T_stats=1, T_inv=1
        )
        return net, loss_fn, optimizer

    gen = torch.Generator().manual_seed(12)
    x, y = torch.randn(16, 1, 4, 4, dtype=DT, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    torch._dynamo.reset()
    results = []
    for compile_it in (False, True):
        net, loss_fn, optimizer = build()
        forward = torch.compile(net, fullgraph=True, backend="aot_eager") if compile_it else net
        for _ in range(2):
            optimizer.zero_grad()
            loss_fn(forward(x), y).backward()
            optimizer.step(x, y)
        results.append([p.detach().clone() for p in net.parameters()])
    initial = [p.detach() for p in build()[0].parameters()]
    for eager, compiled, start in zip(*results, initial):
        torch.testing.assert_close(compiled, eager)
        assert not torch.equal(eager, start)  # the steps moved the parameters
