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
