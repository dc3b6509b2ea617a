import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.spec import IndexPattern


def pattern_by_loops(I, K, S, P, Dl):
    O = (I + 2 * P - Dl * (K - 1) - 1) // S + 1
    pi = torch.zeros(I, O, K)
    for o in range(O):
        for k in range(K):
            i = S * o + Dl * k - P
            if 0 <= i < I:
                pi[i, o, k] = 1
    return pi


@given(I=st.integers(1, 12), K=st.integers(1, 4), S=st.integers(1, 3), P=st.integers(0, 2), Dl=st.integers(1, 3))
def test_index_pattern_matches_definition(I, K, S, P, Dl):
    if I + 2 * P < Dl * (K - 1) + 1:
        return
    expected = pattern_by_loops(I, K, S, P, Dl)
    assert torch.equal(tnconv.index_pattern(I, K, S, P, Dl), expected)


@given(I=st.integers(1, 10), K=st.integers(1, 4), S=st.integers(1, 3), P=st.integers(0, 2), Dl=st.integers(1, 2))
def test_index_pattern_is_the_conv1d_of_a_delta(I, K, S, P, Dl):
    # Π[i, o, k] is the response of a conv1d to a unit input at i and a unit weight at k.
    if I + 2 * P < Dl * (K - 1) + 1:
        return
    x = torch.eye(I, dtype=torch.float64).unsqueeze(1)  # [I, 1, I]: sample i is δ_i
    w = torch.eye(K, dtype=torch.float64).unsqueeze(1)  # [K, 1, K]: channel k is δ_k
    y = torch.nn.functional.conv1d(x, w, stride=S, padding=P, dilation=Dl)  # [I, K, O]
    assert torch.equal(tnconv.index_pattern(I, K, S, P, Dl, dtype=torch.float64), y.permute(0, 2, 1))


def test_same_padding_and_cache():
    a = tnconv.index_pattern(5, 4, padding="same")
    assert a.shape == (5, 5, 4)
    assert tnconv.index_pattern(5, 4, padding="same") is a  # materialised once


def test_structure_queries():
    assert IndexPattern(6, 6, 1).is_identity
    assert not IndexPattern(6, 3, 1, stride=2).is_identity
    assert IndexPattern(6, 3, 2, stride=2).is_non_overlapping
    assert IndexPattern(7, 2, 2, stride=3).is_non_overlapping
    assert not IndexPattern(6, 4, 3, stride=1).is_non_overlapping
    assert not IndexPattern(6, 3, 2, stride=2, padding=1).is_non_overlapping
    assert IndexPattern(6, 3, 2, stride=2, padding=1).has_padding
