"""The chunk budget (``tnconv.chunk_budget`` / ``tnconv.get_chunk_budget``): validated,
restored, read when a chunked lowering runs (bound runners included); results do not depend
on it, the number of chunks does."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.execute import im2col
from tnconv.execute.budget import CHUNK_BYTES, format_bytes
from tnconv.simplify.taps import trim_taps

from .strategies import conv_cases


@pytest.mark.parametrize("bad", [1.5, "1024", True, None, 2**20 * 1.0])
def test_a_budget_that_is_not_an_int_is_a_type_error(bad):
    with pytest.raises(TypeError, match="nbytes"):
        with tnconv.chunk_budget(bad):
            pass  # pragma: no cover
    assert tnconv.get_chunk_budget() == CHUNK_BYTES


@pytest.mark.parametrize("bad", [0, -1, -(2**40)])
def test_a_budget_that_is_not_positive_is_a_value_error(bad):
    with pytest.raises(ValueError, match="nbytes"):
        with tnconv.chunk_budget(bad):
            pass  # pragma: no cover


def test_the_budget_nests_and_is_restored_after_an_error():
    with tnconv.chunk_budget(1000) as outer:
        assert outer == 1000 == tnconv.get_chunk_budget()
        with pytest.raises(RuntimeError):
            with tnconv.chunk_budget(7):
                assert tnconv.get_chunk_budget() == 7
                raise RuntimeError
        assert tnconv.get_chunk_budget() == 1000
    assert tnconv.get_chunk_budget() == CHUNK_BYTES


def _kfc_case(case):
    x, _, _ = case.tensors()
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    return x, kw, tnconv.networks.kfc(x.shape, case.kernel_size, **kw)


@given(case=conv_cases(), budget=st.sampled_from([1, 64, 2**10, 10**12]))
def test_results_do_not_depend_on_the_budget_and_explain_counts_its_chunks(case, budget):
    x, kw, network = _kfc_case(case)
    expected = network.contract(x=x, strategy="einsum")
    tnconv.kfc_factor(x, case.kernel_size, **kw)  # the bound runner exists before the budget is set
    with tnconv.chunk_budget(budget):
        got = tnconv.kfc_factor(x, case.kernel_size, **kw)
        explained = tnconv.explain(network, x=x)
    torch.testing.assert_close(got, expected)
    if explained.route == "im2col":
        cut = trim_taps(network)  # taps that read only padding are cut first: a smaller J
        batch, factor = x.shape[0], (network if cut is None else cut.network).factor
        per_sample = math.prod(factor.output_shape) // batch * x.element_size()
        padded = any(n.pattern.has_padding for n in factor.nodes if n.kind == "pattern")
        if budget >= per_sample:  # whole samples per chunk
            count = math.ceil(batch / min(batch, budget // per_sample))
        else:  # one sample over the budget: blocks of its first output dimension's rows
            rows = factor.size("o1")
            per_row = per_sample // rows
            count = batch * math.ceil(rows / max(1, min(rows, budget // per_row)))
        if batch == 1 and padded:  # one padded sample is cut into row blocks anyway (test_engine_im2col)
            assert count <= explained.chunks <= factor.size("o1")
        else:
            assert explained.chunks == count
        assert any(f"chunk budget {format_bytes(budget)}" in step for step in explained.steps)
    else:
        assert explained.chunks == 1


def test_a_cached_runner_reads_the_budget_when_it_runs(monkeypatch):
    x = torch.randn(6, 4, 7, 7, dtype=torch.float64)
    network = tnconv.networks.kfc(x.shape, 3, padding=1)
    assert tnconv.explain(network, x=x).route == "im2col"
    expected = network.contract(x=x, strategy="einsum")
    tnconv.kfc_factor(x, 3, padding=1)  # bind it under the default budget
    calls = []
    original = im2col._lower_gram_
    monkeypatch.setattr(im2col, "_lower_gram_", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    per_sample = 4 * 9 * 49 * x.element_size()
    # below one sample: blocks of its 7 output rows (6 rows fit in per_sample - 1; one row at least)
    for budget, chunks in [(10**9, 1), (2 * per_sample, 3), (per_sample - 1, 6 * 2), (1, 6 * 7)]:
        calls.clear()
        with tnconv.chunk_budget(budget):
            torch.testing.assert_close(tnconv.kfc_factor(x, 3, padding=1), expected)
            assert tnconv.explain(network, x=x).chunks == chunks
        assert len(calls) == chunks
