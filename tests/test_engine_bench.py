"""Benchmark floors (docs/reference.md §7) and the re-measurement of noisy cases."""

import torch

import tnconv
from tnconv.bench.cases import Case
from tnconv.bench.operations import OPERATIONS, factor_floors, is_floor
from tnconv.bench.runner import BenchConfig, measure, spread

CASE = Case("m", "l", (1, 4, 7, 6), 4, (3, 2), (2, 1), (1, 0), (1, 2), groups=2)


def test_gemm_floors_are_the_final_products():
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    hyper = dict(stride=CASE.stride, padding=CASE.padding, dilation=CASE.dilation, groups=CASE.groups)
    kfc = factor_floors(x, CASE, reduce=False)
    torch.testing.assert_close(kfc["floor:gemm"]() / 3, tnconv.kfc_factor(x, CASE.kernel_size, **hyper))
    torch.testing.assert_close(kfc["floor:read"](), x.sum())
    reduce = factor_floors(x, CASE, reduce=True)
    expected = tnconv.kfac_reduce_factor(x, CASE.kernel_size, **hyper)
    torch.testing.assert_close(reduce["floor:gemm"]() / 3, expected)
    torch.testing.assert_close(reduce["floor:read+gemm"]() / 3, expected)


def test_measure_reports_ratios_to_the_floors():
    config = BenchConfig(reps=3, batch=2, baselines=("torch",))
    measurement = measure(CASE, OPERATIONS["kfac_reduce"], config)
    assert {"torch", "floor:read", "floor:gemm", "floor:read+gemm"} <= set(measurement.ratios())
    assert not any(is_floor(name) for name in measurement.rel_error)
    plain = measure(CASE, OPERATIONS["kfac_reduce"], BenchConfig(reps=3, batch=2, baselines=("torch",), floors=False))
    assert set(plain.ratios()) == {"torch"}


def test_noisy_measurements_are_repeated():
    config = BenchConfig(reps=3, batch=2, baselines=("torch",), max_spread=-1.0, remeasure=2)
    measurement = measure(CASE, OPERATIONS["fwd"], config)
    assert measurement.remeasured == 2  # a spread above -1 always counts as noisy
    steady = measure(CASE, OPERATIONS["fwd"], BenchConfig(reps=3, batch=2, baselines=("torch",), max_spread=1e9))
    assert steady.remeasured == 0
    assert spread({"a": [1.0, 1.0, 1.0]}) == 0.0


from hypothesis import given  # noqa: E402

from tnconv.bench.operations import flip_taps, unfold_of_dilated  # noqa: E402

from .strategies import conv_transpose_cases  # noqa: E402


@given(case=conv_transpose_cases(dims=2, groups=1))
def test_unfold_of_the_dilated_input_is_unfold_transpose_with_flipped_taps(case):
    x, _, _ = case.tensors()
    bench_case = Case(
        "m",
        "t",
        (1, *x.shape[1:]),
        case.out_channels,
        case.kernel_size,
        case.stride,
        case.padding,
        case.dilation,
        transposed=True,
        output_padding=case.output_padding,
    )
    args = (case.kernel_size, case.stride, case.padding, case.output_padding, case.dilation)
    expected = tnconv.unfold_transpose(x, *args)
    torch.testing.assert_close(flip_taps(bench_case, unfold_of_dilated(x, bench_case)), expected)


def test_fold_and_unfold_transpose_are_timed_against_torch():
    config = BenchConfig(reps=2, batch=2, baselines=("torch",))
    fold = measure(Case("m", "f", (1, 3, 7, 6), 4, (3, 2), (2, 1), (1, 0), (1, 2)), OPERATIONS["fold"], config)
    assert set(fold.ratios()) == {"torch"} and fold.rel_error["torch"] < 1e-5
    case = Case("m", "t", (1, 3, 4, 5), 2, (3, 3), (2, 1), (1, 0), (1, 2), transposed=True, output_padding=(1, 0))
    transposed = measure(case, OPERATIONS["unfold_transpose"], config)
    assert set(transposed.ratios()) == {"torch"} and transposed.rel_error["torch"] < 1e-5


def test_cpu_clock_times_process_time():
    import pytest

    from tnconv.bench.timing import time_alternating

    times = time_alternating(
        {"a": lambda: sum(range(20000))}, reps=2, warmup=0, device=torch.device("cpu"), clock="cpu"
    )
    assert len(times["a"]) == 2 and all(t >= 0 for t in times["a"])
    with pytest.raises(ValueError, match="clock"):
        time_alternating({"a": lambda: None}, reps=1, warmup=0, device=torch.device("cpu"), clock="tsc")
    config = BenchConfig(reps=2, batch=2, baselines=("torch",), clock="cpu")
    assert set(measure(CASE, OPERATIONS["fwd"], config).ratios()) == {"torch"}
