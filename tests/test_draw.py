"""Diagrams: matplotlib pictures, DOT and TikZ text, the layout, and ``tnconv draw``.

Expected counts are derived here from the network itself (who carries which leg), not
from tnconv's diagram code: a leg touching ``c`` nodes and open or not touches
``c + open`` places (plus a summed stub when ``c = 1`` and it is not open); two places
make one edge, three or more a junction with one edge per place.
"""

import math
import re
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import tnconv
from tnconv.cli import main
from tnconv.diagrams import diagram, to_dot, to_latex
from tnconv.spec import ConvSpec
from tnconv.symbolic.network import Node, TensorNetwork
from tnconv.symbolic.registry import OPERATIONS, operation_network


def Hyperparameters(channels=4, vectors=3, **keywords):
    """A ConvSpec from layer keywords (``channels`` is ``C_in``) and the number of vectors M."""
    return ConvSpec.create(in_channels=channels, **keywords), vectors


matplotlib = pytest.importorskip("matplotlib")

SMALL = dict(batch=2, channels=4, input_size=6, kernel_size=3, stride=2, padding=1, vectors=2)


def network_of(name, dims=2, **overrides):
    return operation_network(name, *Hyperparameters(dims=dims, **{**SMALL, **overrides}))


def expected_counts(network):
    """(vertices, edges) of the diagram, from the network's legs."""
    carriers = {}
    for node in network.nodes:
        for leg in node.legs:
            carriers[leg] = carriers.get(leg, 0) + 1
    vertices, edges = len(network.nodes), 0
    for leg, count in carriers.items():
        is_open = leg in network.output_legs
        stub = count == 1 and not is_open
        places = count + is_open + stub
        vertices += is_open + stub + (places >= 3)
        edges += places if places >= 3 else 1
    return vertices, edges


# --------------------------------------------------------------------------- DOT parser
def dot_statements(text):
    """The statements of a DOT graph body (split at ';' and newlines outside quotes and brackets)."""
    body = text[text.index("{") + 1 : text.rindex("}")]
    statements, current, quoted, depth, i = [], "", False, 0, 0
    while i < len(body):
        c = body[i]
        if quoted and c == "\\":
            current += body[i : i + 2]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "[":
            depth += 1
        elif not quoted and c == "]":
            depth -= 1
        if not quoted and depth == 0 and c in ";\n":
            if current.strip():
                statements.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    assert not quoted and depth == 0, "unbalanced quotes or brackets"
    if current.strip():
        statements.append(current.strip())
    return statements


ID = r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z_0-9]*'


def parse_dot(text):
    """({node id: attributes}, [(a, b, attributes)]) of an undirected DOT graph."""
    assert re.match(r"\s*graph\s+\w+\s*\{", text), "not an undirected graph"
    nodes, edges = {}, []
    for statement in dot_statements(text):
        if re.match(r"(graph|node|edge)\s*\[", statement):
            continue
        edge = re.match(rf"({ID})\s*--\s*({ID})\s*(\[.*\])?$", statement, re.S)
        if edge:
            edges.append((edge.group(1), edge.group(2), edge.group(3) or ""))
            continue
        node = re.match(rf"({ID})\s*(\[.*\])?$", statement, re.S)
        assert node, f"unparsable statement {statement!r}"
        nodes[node.group(1)] = node.group(2) or ""
    return nodes, edges


def dot_labels(attributes):
    return re.findall(r'(?:^|[\s,\[])x?label="((?:[^"\\]|\\.)*)"', attributes)


# ------------------------------------------------------------------------------- tests
SPEC_OPERATIONS = [
    "conv", "input_vjp", "weight_vjp", "input_jvp", "weight_jvp", "input_mjp", "weight_mjp",
    "unfold", "fold", "conv_transpose", "unfold_transpose", "kfc", "kfac_reduce", "kfc_transpose",
    "kfac_reduce_transpose", "per_sample_weight_grad", "grad_second_moment", "ggn_diagonal", "ggn_gram",
]  # fmt: skip


def test_registry_has_every_operation_of_the_spec():
    assert list(OPERATIONS) == SPEC_OPERATIONS


def test_registry_passes_the_hyperparameters_on():
    # output shapes from torch itself, on tensors of the shapes the registry describes
    h = Hyperparameters(dims=2, batch=2, channels=4, out_channels=6, groups=2, input_size=(7, 6), kernel_size=(3, 2),
                        stride=(2, 1), padding=1, dilation=(1, 2), output_padding=(1, 0), vectors=3)  # fmt: skip
    x, w = torch.zeros(2, 4, 7, 6), torch.zeros(6, 2, 3, 2)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    y = torch.nn.functional.conv2d(x, w, **kw)
    assert operation_network("conv", *h).output_shape == tuple(y.shape)
    assert operation_network("input_vjp", *h).output_shape == tuple(x.shape)
    assert operation_network("weight_mjp", *h).output_shape == (3, *w.shape)
    wt = torch.zeros(4, 3, 3, 2)
    yt = torch.nn.functional.conv_transpose2d(x, wt, output_padding=(1, 0), **kw)
    assert operation_network("conv_transpose", *h).output_shape == tuple(yt.shape)
    unfolded = torch.nn.functional.unfold(x, (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    assert operation_network("unfold", *h).output_shape == tuple(unfolded.shape)
    assert operation_network("fold", *h).output_shape == tuple(x.shape)
    assert operation_network("ggn_diagonal", *h).output_shape == tuple(w.shape)
    assert operation_network("ggn_gram", *h).output_shape == (3 * 2, 3 * 2)
    assert operation_network("kfc", *h).output_shape == (2, 2 * 3 * 2, 2 * 3 * 2)


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_draws_to_png_and_svg_with_one_label_per_leg(name, tmp_path):
    network = network_of(name)
    figure = tnconv.draw(network, tmp_path / f"{name}.svg", title=name)
    assert figure.axes[0].get_title() == name
    tnconv.draw(network, tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = svg_texts(tmp_path / f"{name}.svg")
    for leg in network.legs:
        assert texts.count(leg) == 1, (leg, texts)


def svg_texts(path):
    root = ET.parse(path).getroot()
    return ["".join(element.itertext()).strip() for element in root.iter("{http://www.w3.org/2000/svg}text")]


def test_pdf_sizes_and_existing_axes(tmp_path):
    network = network_of("weight_vjp", dims=1)
    tnconv.draw(network, tmp_path / "w.pdf")
    assert (tmp_path / "w.pdf").read_bytes()[:5] == b"%PDF-"
    from matplotlib.figure import Figure

    figure = Figure()
    ax = figure.add_subplot()
    assert tnconv.draw(network, ax=ax, show_sizes=True) is figure
    labels = {t.get_text() for t in ax.texts}
    assert {f"{leg}={network.size(leg)}" for leg in network.legs} <= labels


def test_simplified_draws_the_simplified_network(tmp_path):
    network = network_of("conv", dims=1).vjp("x")  # with identities tying n' to n and g' to g
    assert any(node.kind == "identity" for node in network.nodes)
    tnconv.draw(network, tmp_path / "s.svg", simplified=True)
    texts = svg_texts(tmp_path / "s.svg")
    assert "δ" not in texts
    assert set(network.simplify().legs) <= set(texts)
    assert "n'" not in texts  # merged into n by the simplification


def test_draw_rejects_bad_paths_and_non_networks(tmp_path):
    with pytest.raises(ValueError, match="path must end in one of"):
        tnconv.draw(network_of("conv"), tmp_path / "c.jpg")
    with pytest.raises(TypeError, match="network must be a tnconv.TensorNetwork"):
        tnconv.draw("conv")


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=re.escape("pip install tnconv[plot]")):
        tnconv.draw(network_of("conv"))
    assert to_dot(network_of("conv")).startswith("graph")  # text output needs no matplotlib


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_dot_parses_with_the_right_nodes_edges_and_labels(name, dims):
    network = network_of(name, dims)
    nodes, edges = parse_dot(network.to_dot())
    vertices, n_edges = expected_counts(network)
    assert len(nodes) == vertices
    assert len(edges) == n_edges
    assert all(a in nodes and b in nodes for a, b, _ in edges)
    for node in network.nodes:
        assert f'"{node.name}"' in nodes
    labels = [label for attrs in list(nodes.values()) + [e[2] for e in edges] for label in dot_labels(attrs)]
    for leg in network.legs:
        assert labels.count(leg) == 1, (leg, labels)


def test_dot_escapes_quotes_and_shows_sizes():
    node = Node('a"b', "input", (("i",), ("j",)))
    network = TensorNetwork((node, Node("c", "input", (("j",),))), (("i", 2), ("j", 3)), (("i",),))
    nodes, edges = parse_dot(to_dot(network, show_sizes=True))
    assert r'"a\"b"' in nodes
    labels = [label for attrs in list(nodes.values()) + [e[2] for e in edges] for label in dot_labels(attrs)]
    assert sorted(labels) == sorted(['a\\"b', "c", "i=2", "j=3"])


@pytest.mark.parametrize("name", ["conv", "kfac_reduce", "ggn_diagonal"])
def test_latex_has_one_node_per_vertex_and_one_draw_per_edge(name):
    network = network_of(name)
    tikz = network.to_latex()
    assert tikz == to_latex(network)
    lines = tikz.splitlines()
    vertices, n_edges = expected_counts(network)
    assert sum(line.startswith(r"\node") for line in lines) == vertices
    assert sum(line.startswith(r"\draw") for line in lines) == n_edges
    assert tikz.count(r"\begin{tikzpicture}") == tikz.count(r"\end{tikzpicture}") == 1
    assert tikz.count("{") == tikz.count("}")
    names = re.findall(r"^\\node\[.*\] \((v\d+)\) at \(-?\d+\.\d+, -?\d+\.\d+\) \{.*\};$", tikz, re.M)
    assert len(names) == len(set(names)) == vertices
    used = re.findall(r"\((v\d+)\)", "\n".join(line for line in lines if line.startswith(r"\draw")))
    assert set(used) <= set(names)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_layout_is_deterministic_and_keeps_nodes_apart(name, dims):
    network = network_of(name, dims)
    layout = diagram.__wrapped__(network)
    assert layout == diagram.__wrapped__(network)
    points = [(v, p) for v, p in zip(layout.vertices, layout.positions) if v.kind != "open"]
    for i, (u, p) in enumerate(points):
        for v, q in points[i + 1 :]:
            gap = 0.5 if u.node is not None and v.node is not None else 0.2
            assert math.dist(p, q) >= gap, (u.id, v.id, p, q)


def test_hyperedges_meet_at_junctions():
    # per-sample gradient of the weight: n joins x, v and the output
    network = network_of("weight_vjp")
    batched = network.with_nodes(network.nodes, output=(("n",),) + network.output)
    layout = diagram(batched)
    assert layout.vertex("junction:n").kind == "junction"
    ends = sorted(e.b for e in layout.edges if e.a == "junction:n")
    assert ends == sorted(["x", "v", "open:n"])


# --------------------------------------------------------------------------------- CLI
def test_cli_draws_the_issue_example(tmp_path, capsys):
    out = tmp_path / "k.svg"
    assert main(["draw", "kfac_reduce", "--kernel-size", "3", "--stride", "2", "-o", str(out)]) == 0
    network = operation_network("kfac_reduce", *Hyperparameters(kernel_size=3, stride=2))
    assert set(network.legs) <= set(svg_texts(out))
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize(("suffix", "check"), [(".dot", "graph tnconv {"), (".tex", r"\begin{tikzpicture}")])
def test_cli_writes_dot_and_tikz(tmp_path, suffix, check):
    out = tmp_path / f"c{suffix}"
    args = ["draw", "conv", "--dims", "3", "--kernel-size", "3,1,2", "--padding", "same", "--groups", "2"]
    assert main([*args, "--sizes", "-o", str(out)]) == 0
    assert check in out.read_text()
    assert "k2=1" in out.read_text() or "k_{2} = 1" in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonsense"], "unknown operation 'nonsense'"),
        (["conv", "--stride", "0"], "stride must be positive"),
        (["conv", "--stride", "two"], "--stride must be an int or comma-separated ints, got 'two'"),
        (["conv", "--kernel-size", "3,3,3"], "kernel_size must be an int or a tuple of 2 ints"),
        (["conv", "--groups", "3"], "not divisible by groups=3"),
        (["conv", "--padding", "same", "--stride", "2"], "padding='same' requires stride 1"),
        (["conv", "--kernel-size", "9", "--input-size", "4"], "larger than the padded input"),
        (["conv", "--batch", "-1"], "batch must be positive"),
        (["conv", "-o", "c.jpg"], "-o FILE must end in one of"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(args, message, capsys, tmp_path):
    full = ["draw", *args] if "-o" in args else ["draw", *args, "-o", str(tmp_path / "c.svg")]
    with pytest.raises(SystemExit) as exit_info:
        main(full)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tnconv draw: error: ") and message in err
    assert not (tmp_path / "c.svg").exists()


def test_cli_help_lists_operations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["draw", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in OPERATIONS)


def test_cli_without_matplotlib_still_writes_text_and_explains_pictures(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["draw", "mjp", "--vectors", "5", "-o", str(tmp_path / "m.dot")]) == 0
    nodes, _ = parse_dot((tmp_path / "m.dot").read_text())
    assert '"open:m"' in nodes  # the alias mjp is the input MJP, with the vectors' leg m
    with pytest.raises(SystemExit) as exit_info:
        main(["draw", "conv", "-o", str(tmp_path / "c.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tnconv[plot]" in err


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_simplified_networks_draw_as_dot(name):
    # kernel = stride: the non-overlapping rule splits legs, KFAC-reduce pre-contracts Σ_o Π
    network = network_of(name, kernel_size=2, stride=2, padding=0)
    simple = network.simplify()
    nodes, edges = parse_dot(to_dot(network, simplified=True))
    assert (len(nodes), len(edges)) == expected_counts(simple)
    for node in simple.nodes:
        assert f'"{node.name}"' in nodes
