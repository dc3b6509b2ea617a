"""Every input torch accepts gives torch's answer; every wrong argument a TypeError/ValueError
naming it; the CLI answers a user's mistake with one line, not a traceback."""

import json

import pytest
import torch

import tnconv
from tnconv.cli import main

DT = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ inputs torch accepts
@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_empty_batches_at_every_dimension(dims):
    x = torch.randn(0, 3, *(5,) * dims, dtype=DT, requires_grad=True)
    w = torch.randn(4, 3, *(2,) * dims, dtype=DT, requires_grad=True)
    y = tnconv.conv(x, w, padding=1)
    expected_shape = (0, 4, *(6,) * dims)
    assert y.shape == expected_shape
    gx, gw = torch.autograd.grad(y.sum(), (x, w))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))
    t = tnconv.conv_transpose(x, w.transpose(0, 1), stride=2)
    assert t.shape == (0, 4, *(10,) * dims)
    assert tnconv.unfold(x, 2).shape == (0, 3 * 2**dims, 4**dims)
    if dims <= 3:
        conv = getattr(torch.nn.functional, f"conv{dims}d")
        assert conv(x, w, padding=1).shape == expected_shape


def test_expanded_stride_zero_views_give_torch_answers():
    base = torch.randn(1, 3, 6, 6, dtype=DT, generator=gen(1))
    x = base.expand(4, 3, 6, 6)  # stride 0 over the batch
    w = torch.randn(1, 3, 3, 3, dtype=DT, generator=gen(2)).expand(5, 3, 3, 3)
    torch.testing.assert_close(tnconv.conv(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1))
    v = torch.randn(4, 5, 6, 6, dtype=DT, generator=gen(3))
    torch.testing.assert_close(tnconv.conv_weight_vjp(x, v, w.shape, padding=1),
                               torch.nn.grad.conv2d_weight(x, w.shape, v, padding=1))  # fmt: skip
    torch.testing.assert_close(tnconv.unfold(x, 3), torch.nn.functional.unfold(x, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int64, torch.int32, torch.uint8])
def test_every_dtype_torch_convolves_gives_its_answer(dtype):
    x = torch.randint(0, 3, (1, 2, 6, 6)).to(dtype)
    w = torch.randint(0, 3, (3, 2, 3, 3)).to(dtype)
    y, ref = tnconv.conv(x, w), torch.nn.functional.conv2d(x, w)
    assert y.dtype == ref.dtype
    torch.testing.assert_close(y, ref)


def test_bool_tensors_are_a_type_error():
    x, w = torch.ones(1, 2, 6, 6, dtype=torch.bool), torch.ones(3, 2, 3, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match="input has dtype torch.bool"):
        tnconv.conv(x, w)


# ------------------------------------------------------------------ wrong arguments
X, W = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
V = torch.randn(2, 4, 4, 4)
NAN = float("nan")


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: tnconv.conv(X.tolist(), W), TypeError, "input"),
        (lambda: tnconv.conv(X, W, [0.0] * 4), TypeError, "bias"),
        (lambda: tnconv.conv_transpose(X, W.transpose(0, 1), (0.0,) * 3), TypeError, "bias"),
        (lambda: tnconv.conv_input_vjp(W, V.tolist(), X.shape), TypeError, "v"),
        (lambda: tnconv.conv_weight_vjp(X, V, [3, 3.5]), TypeError, "kernel_size"),
        (lambda: tnconv.conv(X, W, stride=NAN), TypeError, "stride"),
        (lambda: tnconv.conv(X, W, padding=NAN), TypeError, "padding"),
        (lambda: tnconv.conv(X, W, dilation=(1, NAN)), TypeError, "dilation"),
        (lambda: tnconv.conv(X, W, groups=0), ValueError, "groups"),
        (lambda: tnconv.unfold(X, 3, stride=0), ValueError, "stride"),
        (lambda: tnconv.fold(torch.randn(1, 4, 9), (4, 4), 0), ValueError, "kernel_size"),
        (lambda: tnconv.kfc_factor(X.tolist(), 3), TypeError, "x"),
        (lambda: tnconv.randomized.conv(X, W, keep=NAN), ValueError, "keep"),
        (lambda: tnconv.randomized.conv_weight_vjp(X, V, 3, keep=0.5, generator=3), TypeError, "generator"),
        (lambda: tnconv.randomized.conv_weight_vjp(X, V, 3, keep=0.5, generator=[1]), TypeError, "generator"),
        (lambda: tnconv.nn.Conv2d(3, 4, 3, backward_keep=NAN), ValueError, "backward_keep"),
        (lambda: tnconv.nn.Conv2d(3, 4, 3)([1.0, 2.0]), TypeError, "input"),
        (lambda: tnconv.nn.convert("model"), TypeError, "model"),
    ],
)
def test_wrong_arguments_raise_type_or_value_errors_naming_them(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type")
def test_generator_on_the_wrong_device():
    with pytest.raises(ValueError, match="generator"):
        tnconv.randomized.conv_weight_vjp(X, V, 3, keep=0.5, generator=torch.Generator("cuda"))


# ------------------------------------------------------------------ the CLI
TINY = {"model": "tiny", "name": "c", "input_shape": [1, 2, 6, 6], "out_channels": 2, "kernel_size": 3}


def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_cli_refuses_an_unusable_out_before_running(tmp_path, capsys):
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(TINY) + "\n")
    occupied = tmp_path / "file"
    occupied.write_text("mine")
    err = _cli_error(["--cases", str(cases), "--ops", "fwd", "--out", str(occupied)], capsys)
    assert "--out" in err and "existing file" in err
    assert occupied.read_text() == "mine"
    (tmp_path / "o" / "results.json").mkdir(parents=True)
    err = _cli_error(["--cases", str(cases), "--ops", "fwd", "--out", str(tmp_path / "o")], capsys)
    assert "occupied" in err and "results.json" in err
    err = _cli_error(["--cases", str(cases), "--ops", "fwd", "--out", str(occupied / "sub")], capsys)
    assert "not writable" in err


def test_cli_refuses_a_case_larger_than_memory_with_the_estimate(tmp_path, capsys):
    huge = {**TINY, "input_shape": [1, 64, 8192, 8192], "out_channels": 64}
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps(huge) + "\n")
    err = _cli_error(["--cases", str(cases), "--ops", "fwd", "--batch-size", "64", "--out", str(tmp_path / "o")],
                     capsys)  # fmt: skip
    assert "tiny/c at batch 64 needs at least" in err and "GiB" in err and "available" in err


def test_cli_names_an_undecodable_cases_file(tmp_path, capsys):
    cases = tmp_path / "binary.jsonl"
    cases.write_bytes(b"\xff\xfe\x00\x81 not text")
    err = _cli_error(["--cases", str(cases), "--out", str(tmp_path / "o")], capsys)
    assert "binary.jsonl" in err and "UTF-8" in err
