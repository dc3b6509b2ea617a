"""Every input torch accepts gives torch's answer; every wrong argument a TypeError/ValueError
naming it; the CLI answers a user's mistake with one line, not a traceback."""

import json
import warnings
from pathlib import Path

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


# ------------------------------------------------------------------ second pass (issue 16)
@pytest.mark.parametrize(
    "dtype",
    [getattr(torch, n) for n in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "complex32")
     if hasattr(torch, n)],
)  # fmt: skip
def test_dtypes_without_a_convolution_are_a_type_error_naming_the_dtype(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that complex32 is experimental
        x, w = torch.ones(1, 2, 6, 6).to(dtype), torch.ones(3, 2, 3, 3).to(dtype)
    for call in (
        lambda: tnconv.conv(x, w),
        lambda: tnconv.conv_transpose(x, w.transpose(0, 1)),
        lambda: tnconv.nn.Conv2d(2, 3, 3, bias=False)(x),
    ):
        with pytest.raises(TypeError, match=rf"input has dtype {dtype}"):
            call()


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_kronecker_factors_of_an_empty_batch_are_nan_not_a_zero_division(dims):
    x, empty = torch.randn(2, 4, *[5] * dims, dtype=DT), torch.empty(0, 4, *[5] * dims, dtype=DT)
    for factor in (tnconv.kfc_factor, tnconv.kfac_reduce_factor, tnconv.kfc_factor_transpose,
                   tnconv.kfac_reduce_factor_transpose):  # fmt: skip
        for bias in (False, True):
            got, reference = factor(empty, 2, groups=2, bias=bias), factor(x, 2, groups=2, bias=bias)
            assert got.shape == reference.shape and got.dtype == reference.dtype and got.isnan().all()
    # torch's baseline, the mean over no samples of unfolded products, is NaN too
    if dims == 2:
        u = torch.nn.functional.unfold(empty, 2)
        assert (torch.einsum("nip,njp->ij", u, u) / empty.shape[0]).isnan().all()
    # the output-gradient factor is a sum over the batch: zero
    g = torch.empty(0, 6, *[3] * dims, dtype=DT)
    for approx in ("expand", "reduce"):
        assert torch.equal(tnconv.output_grad_factor(g, approx, groups=2), torch.zeros(2, 3, 3, dtype=DT))


def test_randomized_backward_of_complex_tensors_is_a_type_error():
    x, w = torch.randn(2, 3, 6, 6, dtype=torch.complex128), torch.randn(4, 3, 3, 3, dtype=torch.complex128)
    v = torch.randn(2, 4, 4, 4, dtype=torch.complex128)
    for call, name in [
        (lambda: tnconv.randomized.conv(x, w), "input"),
        (lambda: tnconv.randomized.conv_transpose(v, w), "input"),
        (lambda: tnconv.nn.Conv2d(3, 4, 3, dtype=torch.complex128, backward_keep=0.5)(x), "input"),
        (lambda: tnconv.randomized.conv_weight_vjp(x, v, 3), "x"),
        (lambda: tnconv.randomized.conv_input_vjp(w, v, x.shape), "weight"),
    ]:
        with pytest.raises(TypeError, match=rf"{name} is complex .* real tensors only"):
            call()


def test_cli_draw_refuses_an_unusable_output_without_a_traceback(tmp_path, capsys):
    for output, message in [
        (tmp_path / "missing" / "a.dot", "does not exist"),
        (Path("/proc/tnconv-test.dot"), "cannot write"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["draw", "conv", "-o", str(output)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err and str(output) in err
    folder = tmp_path / "folder.dot"
    folder.mkdir()
    with pytest.raises(SystemExit):
        main(["draw", "conv", "-o", str(folder)])
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("module", [tnconv.nn.Conv1d, tnconv.nn.Conv2d, tnconv.nn.ConvTranspose3d, tnconv.nn.ConvNd])
def test_module_constructors_name_a_nan_kernel_size_or_groups(module):
    nan = float("nan")
    for kwargs, error, name in [
        ({"kernel_size": nan}, TypeError, "kernel_size"),
        ({"kernel_size": (2, nan, 2)}, TypeError, "kernel_size"),
        ({"kernel_size": 0}, ValueError, "kernel_size"),
        ({"kernel_size": 2, "groups": nan}, TypeError, "groups"),
        ({"kernel_size": 2, "groups": 1.5}, TypeError, "groups"),
    ]:
        if module is tnconv.nn.ConvNd:
            kwargs = {**kwargs, "spatial_dims": 3}
        with pytest.raises(error, match=name):
            module(2, 2, **kwargs)
