"""The structure of the package: imports flow one way, one dispatcher, one cache policy."""

import ast
from pathlib import Path

import pytest
import torch

import tnconv
from tnconv.caching import cached
from tnconv.execute import STRATEGIES, strategies
from tnconv.symbolic.registry import OPERATIONS, operation_network

PACKAGE = Path(tnconv.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of tnconv it imports``, counting imports inside functions too.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
    """
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = resolve(name, is_package, node.level, node.module) if node.level else node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_detector_finds_a_planted_cycle():
    graph = import_graph()
    graph["tnconv.spec.pattern"] = graph["tnconv.spec.pattern"] | {"tnconv.execute.dispatch"}
    assert any("tnconv.spec.pattern" in c and "tnconv.execute.dispatch" in c for c in cycles(graph))


LAYERS = ["caching", "spec", "symbolic", "simplify", "execute", "functional", "randomized", "nn", "kfac"]


def test_layers_import_only_downwards():
    graph = import_graph()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    for module, targets in graph.items():
        layer = module.split(".")[1] if "." in module else None
        if layer not in rank:
            continue
        for target in targets:
            other = target.split(".")[1] if "." in target else None
            if other in rank:
                assert rank[other] <= rank[layer], f"{module} imports {target} from a layer above"


# ------------------------------------------------------------------ strategies
def inputs_for(network, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(network.input_shape(n), dtype=torch.float64, generator=gen) for n in network.inputs}


SPECS = {
    "plain": tnconv.ConvSpec.create(
        dims=2,
        batch=2,
        in_channels=4,
        out_channels=6,
        groups=2,
        input_size=(7, 6),
        kernel_size=(3, 2),
        stride=(2, 1),
        padding=1,
        dilation=(1, 2),
    ),
    "1x1": tnconv.ConvSpec.create(dims=1, in_channels=3, out_channels=2, input_size=5, kernel_size=1),
    "patchify": tnconv.ConvSpec.create(dims=2, in_channels=2, input_size=8, kernel_size=4, stride=4),
    "3d": tnconv.ConvSpec.create(dims=3, batch=1, in_channels=2, input_size=5, kernel_size=3, padding=1),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("spec", list(SPECS))
def test_every_registered_strategy_agrees_with_the_dense_reference(strategy, operation, spec):
    network = operation_network(operation, SPECS[spec], vectors=2)
    tensors = inputs_for(network)
    expected = tnconv.execute.contract(network, tensors, "einsum")
    result = STRATEGIES[strategy](network, tensors)
    if result is None:  # the strategy does not apply to this network
        return
    torch.testing.assert_close(result.reshape(expected.shape), expected, rtol=1e-10, atol=1e-10)


def test_auto_applies_to_every_operation_and_the_descriptions_are_there():
    assert all(strategies().values())
    for name in OPERATIONS:
        network = operation_network(name, SPECS["plain"], vectors=2)
        tensors = inputs_for(network)
        torch.testing.assert_close(
            tnconv.execute.contract(network, tensors), tnconv.execute.contract(network, tensors, "einsum")
        )


def test_a_new_strategy_is_one_registration():
    calls = []

    def counting(network, tensors):
        calls.append(network)
        return None  # never applies: auto falls through to the next strategy

    tnconv.execute.register_strategy("counting", counting, "test", priority=0)
    try:
        x, w = torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)
        torch.testing.assert_close(tnconv.conv(x, w), torch.nn.functional.conv1d(x, w))
        assert calls, "auto did not try the registered strategy"
        with pytest.raises(ValueError, match="does not apply"):
            tnconv.conv(x, w, strategy="counting")
    finally:
        tnconv.execute.dispatch._REGISTRY.pop("counting")
        STRATEGIES.pop("counting")


def test_bias_is_fused_or_added_by_the_dispatcher():
    x, w, b = (torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64),
               torch.randn(4, dtype=torch.float64))  # fmt: skip
    network = tnconv.networks.conv(x.shape, w.shape)
    expected = torch.nn.functional.conv1d(x, w, b)
    for strategy in ("auto", "native", "structured", "simplified", "einsum"):
        got = tnconv.execute.contract(network, {"x": x, "w": w}, strategy, bias=b)
        torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------ caches
@pytest.mark.parametrize("name, good, bad", [("stride", 2, 2.0), ("stride", 1, True), ("dilation", 1, True),
                                             ("groups", 1, True), ("padding", 1, 1.0)])  # fmt: skip
def test_cache_keys_are_type_strict(name, good, bad):
    x, w = torch.randn(1, 2, 9), torch.randn(2, 2, 3)
    tnconv.conv(x, w, **{name: good})  # cached now
    with pytest.raises(TypeError, match=name):
        tnconv.conv(x, w, **{name: bad})
    with pytest.raises(TypeError, match=name):
        tnconv.networks.conv(x.shape, w.shape, **{name: bad})


def test_clear_caches_empties_every_cache():
    tnconv.conv(torch.randn(1, 2, 9), torch.randn(2, 2, 3), padding=1)
    assert sum(info.size for info in tnconv.cache_stats()) > 0
    tnconv.clear_caches()
    assert sum(info.size for info in tnconv.cache_stats()) == 0


def test_tensor_caches_are_bounded_by_bytes():
    @cached(maxsize=100, max_bytes=1000, tensors=True)
    def block(n):
        return torch.zeros(n)  # n float32 = 4n bytes

    for n in range(1, 60):
        block(n)
    info = block.cache_info()
    assert info.nbytes <= 1000 and info.size < 59
    block(300)  # larger than the bound alone: kept (the newest entry), everything else evicted
    assert block.cache_info().size == 1


def test_entries_are_bounded():
    @cached(maxsize=3)
    def square(n):
        return n * n

    for n in range(10):
        square(n)
    assert square.cache_info().size == 3


def test_version_flag(capsys):
    from tnconv.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("tnconv ")


def test_network_methods_reach_the_layers_above():
    network = tnconv.networks.conv((1, 2, 5), (3, 2, 3))
    assert network.simplify() == tnconv.simplify.simplify(network)
    assert network.to_dot().startswith("graph tnconv")
    x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
    torch.testing.assert_close(network.contract(x=x, w=w), torch.nn.functional.conv1d(x, w))


def test_strategy_of_the_wrong_type_is_a_type_error():
    x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 3)
    with pytest.raises(TypeError, match="strategy"):
        tnconv.conv(x, w, strategy=3)
    with pytest.raises(ValueError, match="strategy"):
        tnconv.conv(x, w, strategy="nope")
