"""The benchmark runner and the ``tnconv bench`` command (no timing assertions)."""

import io
import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.bench import cases as bench_cases
from tnconv.bench.cases import Case, CaseFormatError, batch_size, bundled_cases, parse_cases, select_cases
from tnconv.bench.memory import measure_memory, peak_extra_bytes
from tnconv.bench.operations import OPERATIONS, loop_of_conv3d, parse_ops, unfold_factor
from tnconv.bench.progress import LineProgress, make_progress
from tnconv.bench.stats import ratio_stats, summarize
from tnconv.bench.timing import time_alternating
from tnconv.cli import main

from .reference import conv_reference
from .strategies import conv_cases

TINY = [
    {"model": "tiny", "name": "a", "input_shape": [1, 2, 6, 6], "kernel_size": [3, 3], "stride": [2, 2],
     "padding": [1, 1], "dilation": [1, 1], "groups": 2, "in_channels": 2, "out_channels": 4, "bias": True,
     "transposed": False},
    {"model": "tiny", "name": "b", "input_shape": [1, 3, 9], "kernel_size": 2, "dilation": 2, "out_channels": 2,
     "bias": False},
]  # fmt: skip


def write_cases(path: Path, lines) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


# --- the command, end to end -------------------------------------------------------------------


def test_cli_end_to_end_on_two_tiny_cases(tmp_path, capsys):
    cases = write_cases(tmp_path / "mine.jsonl", TINY)
    out = tmp_path / "results"
    code = main(["bench", "--cases", str(cases), "--reps", "2", "--batch-size", "2", "--out", str(out), "--per-case"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "case 1/2 tiny/a fwd" in printed  # plain progress lines: stdout is not a terminal here
    assert "worst case" in printed and "tiny/a" in printed
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["cases"]] == ["a", "b"]
    fwd = [m for m in results["measurements"] if m["operation"] == "fwd"]
    assert [m["case"] for m in fwd] == ["tiny/a", "tiny/b"]
    for m in fwd:
        assert m["batch"] == 2 and len(m["seconds"]["tnconv"]) == 2 and m["ratios"]["torch"] > 0
        assert m["rel_error"]["torch"] < 1e-4
    stats = results["summary"]["fwd"]["torch"]
    assert stats["count"] == 2 and stats["minimum"] <= stats["median"] <= stats["maximum"]
    assert stats["worst_case"] in {"tiny/a", "tiny/b"}
    assert (out / "summary.txt").read_text().startswith("Run time ratio")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("matplotlib is not installed" in note for note in results["notes"])
    else:
        assert (out / "ratios.png").stat().st_size > 0 and (out / "ratios.svg").stat().st_size > 0


def test_cli_runs_as_module_with_same_options(tmp_path, monkeypatch, capsys):
    cases = write_cases(tmp_path / "c.jsonl", TINY[1:])
    argv = ["--cases", str(cases), "--ops", "fwd", "--reps", "1", "--batch-size", "1", "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["python -m tnconv.bench", *argv, "--no-plot", "--no-einconv"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("tnconv.bench", run_name="__main__")
    assert exit_info.value.code == 0
    assert "tiny/b" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "results.json").read_text())["meta"]["baselines"] == ["torch"]
    assert not (tmp_path / "o" / "ratios.png").exists()


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ({**TINY[0], "kernel_size": "3x3"}, "kernel_size"),
        ({**TINY[0], "stride": [1, 0]}, "stride"),
        ({**TINY[0], "groups": 3}, "groups"),
        ({**TINY[0], "in_channels": 5}, "in_channels"),
        ({**TINY[0], "strides": [1, 1]}, "strides"),
        ({k: v for k, v in TINY[0].items() if k != "out_channels"}, "out_channels"),
        ({**TINY[0], "output_padding": [1, 1]}, "output_padding"),
        ({**TINY[0], "kernel_size": [9, 9], "padding": 0}, "kernel_size"),
        ({**TINY[0], "bias": "yes"}, "bias"),
    ],
)
def test_malformed_cases_file_names_line_and_field(tmp_path, capsys, bad_line, field):
    cases = write_cases(tmp_path / "bad.jsonl", ["# my layers", TINY[1], bad_line])
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--cases", str(cases), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"bad.jsonl, line 3, field {field!r}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_invalid_json_and_bad_options_are_one_line_errors(tmp_path, capsys):
    cases = write_cases(tmp_path / "bad.jsonl", [TINY[0], '{"input_shape": [1, 2, 5],'])
    for argv, expected in [
        (["--cases", str(cases)], "bad.jsonl, line 2: invalid JSON"),
        (["--cases", str(tmp_path / "missing.jsonl")], "cannot read cases file"),
        (["--ops", "fwd,nope"], "--ops: unknown operation 'nope'"),
        (["--nets", "resnet18,lenet"], "--nets: unknown network 'lenet'"),
        (["--batch-size", "many"], "--batch-size must be 'auto' or a positive int"),
        (["--reps", "0", "--nets", "m5_audio"], "--reps must be at least 1"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", *argv, "--out", str(tmp_path / "o")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


def test_list_shows_default_subset_and_full(capsys):
    assert main(["bench", "--list", "--nets", "cifar10_3c3d"]) == 0
    assert capsys.readouterr().out.strip() == "cifar10_3c3d: " + ", ".join(bench_cases.DEFAULT_SUBSET["cifar10_3c3d"])
    assert main(["bench", "--list", "--full", "--nets", "cifar10_3c3d"]) == 0
    assert capsys.readouterr().out.strip() == "cifar10_3c3d: 0, 3, 6"


# --- the loader --------------------------------------------------------------------------------


def test_bundled_cases_load_and_the_default_subset_exists():
    cases = bundled_cases()
    data = Path(bench_cases.__file__).parent / "data"
    lines = sum(len(p.read_text().split("\n")) - 1 for p in data.glob("*.jsonl"))
    assert len(cases) == lines == 82
    labels = {case.label for case in cases}
    for model, names in bench_cases.DEFAULT_SUBSET.items():
        for name in names:
            assert f"{model}/{name}" in labels
    assert {case.dims for case in cases} == {1, 2, 4}
    assert sum(case.transposed for case in cases) == 3
    default = select_cases(cases, None, bench_cases.DEFAULT_SUBSET)
    assert len(default) == sum(len(v) for v in bench_cases.DEFAULT_SUBSET.values())


def test_parse_case_defaults_and_normalisation():
    case = parse_cases(json.dumps(TINY[1]), "f.jsonl")[0]
    assert case == Case("tiny", "b", (1, 3, 9), 2, (2,), (1,), (0,), (2,), 1, False, False, ())
    assert case.output_spatial_size() == (7,)
    assert parse_cases('{"input_shape": [4, 2, 5, 5], "kernel_size": 3, "out_channels": 1}', "f", "mine")[0].label == (
        "mine/1"
    )  # batch 4 in the file is replaced by the rule; model and name default
    t = parse_cases(
        '{"input_shape": [1, 4, 3, 3], "kernel_size": 3, "stride": 2, "padding": 1, "out_channels": 2, '
        '"transposed": true, "output_padding": 1}',
        "f",
    )[0]
    assert t.weight_shape() == (4, 2, 3, 3)
    assert t.output_spatial_size() == tuple(
        F.conv_transpose2d(torch.zeros(1, 4, 3, 3), torch.zeros(4, 2, 3, 3), None, 2, 1, 1).shape[2:]
    )


def test_empty_file_is_rejected(tmp_path):
    with pytest.raises(CaseFormatError, match=r"^empty.jsonl: no cases found$"):
        parse_cases("# nothing here\n\n", "empty.jsonl")


def test_duplicate_names_are_rejected():
    with pytest.raises(CaseFormatError, match=r"f, line 2, field 'name': 'tiny/a' already defined on line 1"):
        parse_cases("\n".join([json.dumps(TINY[0])] * 2), "f")


def test_batch_size_rule():
    def case(channels, *size):
        return Case("m", "n", (1, channels, *size), 1, (1,) * len(size), (1,) * len(size), (0,) * len(size),
                    (1,) * len(size))  # fmt: skip

    assert batch_size(case(3, 32, 32)) == 64  # 2**21 // 3072 = 682, clamped
    assert batch_size(case(64, 56, 56)) == 10  # 2097152 // 200704
    assert batch_size(case(64, 224, 224)) == 1  # 0, clamped
    assert batch_size(case(64, 56, 56), budget=2**20, maximum=4) == 4


# --- the operations ----------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [4, 5])
@settings(max_examples=10)
@given(data=st.data())
def test_loop_of_conv3d_matches_reference(dims, data):
    c = data.draw(conv_cases(dims=dims, max_size=4 if dims == 4 else 3, allow_same=False))
    x, w, b = c.tensors()
    expected = conv_reference(x, w, c.stride, c.padding_tuple, c.dilation, c.groups)
    if b is not None:
        expected = expected + b.view(1, -1, *[1] * dims)
    result = loop_of_conv3d(x, w, b, c.stride, c.padding_tuple, c.dilation, c.groups)
    torch.testing.assert_close(result, expected)


def manual_unfold(x, kernel, stride, padding, dilation):
    """[N, C, K1, K2, O1, O2] by slicing the padded input per kernel offset (independent of F.unfold)."""
    xp = F.pad(x, [padding[1], padding[1], padding[0], padding[0]])
    out = [(xp.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(2)]
    rows = []
    for k1 in range(kernel[0]):
        cols = []
        for k2 in range(kernel[1]):
            s1, s2 = k1 * dilation[0], k2 * dilation[1]
            cols.append(xp[:, :, s1 : s1 + (out[0] - 1) * stride[0] + 1 : stride[0],
                           s2 : s2 + (out[1] - 1) * stride[1] + 1 : stride[1]])  # fmt: skip
        rows.append(torch.stack(cols, 2))
    return torch.stack(rows, 2)


@pytest.mark.parametrize("reduce", [False, True])
def test_unfold_factor_matches_definition(reduce):
    case = Case("m", "n", (1, 6, 7, 6), 6, (3, 2), (2, 1), (1, 0), (1, 2), groups=3)
    x = torch.randn(4, 6, 7, 6, dtype=torch.float64)
    u = manual_unfold(x, case.kernel_size, case.stride, case.padding, case.dilation)  # [N, C, K1, K2, O1, O2]
    n, g = x.shape[0], case.groups
    u = u.reshape(n, g, -1, u.shape[-2] * u.shape[-1])  # [N, G, Ci*K, O]
    if reduce:
        m = u.mean(-1)
        expected = torch.einsum("ngi,ngj->gij", m, m) / n
    else:
        expected = torch.einsum("ngio,ngjo->gij", u, u) / n
    torch.testing.assert_close(unfold_factor(x, case, reduce), expected)


SMALL = [
    Case("m", "2d", (1, 4, 7, 6), 6, (3, 2), (2, 1), (1, 0), (1, 2), groups=2),
    Case("m", "1d", (1, 3, 11), 2, (3,), (2,), (1,), (1,)),
    Case("m", "4d", (1, 2, 4, 5, 4, 3), 2, (2, 3, 1, 2), (1, 2, 1, 1), (1, 0, 0, 1), (1, 1, 2, 1)),
    Case("m", "t", (1, 4, 3, 4), 6, (3, 2), (2, 1), (1, 0), (1, 1), groups=2, transposed=True, output_padding=(1, 0)),
]


@pytest.mark.parametrize("operation", [name for name, op in OPERATIONS.items() if not op.estimator])
@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
def test_every_implementation_of_an_operation_agrees(operation, case):
    op = OPERATIONS[operation]
    if not op.applies(case):
        return
    functions = op.setup(case, 3, torch.float64, torch.device("cpu"))
    if not op.available():
        functions.pop("tnconv")
    outputs = {name: f() for name, f in functions.items()}
    if op.canonical is not None:  # a baseline computing the same numbers in another layout
        outputs = {name: out if name == "tnconv" else op.canonical(case, out) for name, out in outputs.items()}
    names = list(outputs)
    for name in names[1:]:
        torch.testing.assert_close(outputs[name], outputs[names[0]], msg=f"{name} vs {names[0]}")


def test_applicability():
    applies = {name: [c.name for c in SMALL if op.applies(c)] for name, op in OPERATIONS.items()}
    assert applies["fwd"] == ["2d", "1d"] and applies["conv_transpose"] == ["t"] and applies["conv4d"] == ["4d"]
    unfold = OPERATIONS["unfold"].setup(SMALL[1], 1, torch.float32, torch.device("cpu"))
    assert "torch" not in unfold  # torch's unfold is 2-d only


def test_parse_ops():
    assert [op.name for op in parse_ops(None)] == [name for name, op in OPERATIONS.items() if op.default]
    assert [op.name for op in parse_ops("kfc, fwd,kfc")] == ["kfc", "fwd"]
    with pytest.raises(ValueError, match="no operation"):
        parse_ops(" , ")


# --- timing, statistics, progress, memory --------------------------------------------------------


def test_time_alternating_rotates_the_order():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = time_alternating(functions, reps=4, warmup=1, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == list("abcbcacababc")
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_ratio_stats():
    s = ratio_stats([("a", 4.0), ("b", 1.0), ("c", 0.25), ("d", 2.0)])
    assert (s.count, s.median, s.minimum, s.maximum) == (4, 1.5, 0.25, 4.0)
    assert (s.worst_case, s.best_case) == ("a", "c")
    assert math.isclose(s.geomean, (4.0 * 1.0 * 0.25 * 2.0) ** 0.25)
    for bad in ([], [("a", 0.0)], [("a", float("inf"))]):
        with pytest.raises(ValueError):
            ratio_stats(bad)


def test_summarize_groups_by_operation_and_baseline():
    rows = [
        ("fwd", "torch", "a", 2.0),
        ("kfc", "torch", "a", 0.5),
        ("fwd", "einconv", "a", 0.1),
        ("fwd", "torch", "b", 1.0),
    ]
    summary = summarize(rows)
    assert list(summary) == ["fwd", "kfc"] and list(summary["fwd"]) == ["torch", "einconv"]
    assert (summary["fwd"]["torch"].count, summary["fwd"]["torch"].median) == (2, 1.5)
    assert summary["fwd"]["torch"].worst_case == "a"


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = make_progress(stream)
    assert isinstance(progress, LineProgress)
    progress.start(total=4, cases=2)
    progress.step(0, 0, "net/a", "fwd")
    progress.step(3, 1, "net/b", "kfc")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("case 1/2 net/a fwd  elapsed 0:00, remaining ~?")
    assert lines[1].startswith("case 2/2 net/b kfc  elapsed")


linux_only = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")


@linux_only
def test_peak_extra_bytes_sees_a_large_temporary():
    size = 64 * 2**20  # above glibc's largest dynamic mmap threshold: always its own mapping

    def allocate_and_drop():
        temporary = torch.ones(size // 4)
        return temporary.sum()

    assert peak_extra_bytes(allocate_and_drop, torch.device("cpu")) >= 0.9 * size


@linux_only
def test_measure_memory_in_a_child_process():
    case = Case("m", "n", (1, 8, 64, 64), 8, (3, 3), (1, 1), (1, 1), (1, 1))
    sizes = measure_memory(case, 8, torch.float32, torch.device("cpu"), ("torch", "tnconv"), ("unfold",))
    unfolded = 8 * 8 * 9 * 64 * 64 * 4
    assert isinstance(sizes["unfold"]["torch"], int) and sizes["unfold"]["torch"] >= 0.9 * unfolded


def test_randomized_operations_are_opt_in_estimates():
    ops = parse_ops("randomized_weight_vjp")
    assert [op.name for op in ops] == [f"randomized_weight_vjp@{k:g}" for k in (1.0, 0.5, 0.25, 0.1)]
    assert not any(op.default for op in ops) and all(op.available() and op.estimator for op in ops)
    assert not any(op.name.startswith("randomized") for op in parse_ops(None))
    exact = ops[0].setup(SMALL[0], 3, torch.float64, torch.device("cpu"))  # keep = 1: the exact VJP
    torch.testing.assert_close(exact["tnconv"](), exact["torch"]())
