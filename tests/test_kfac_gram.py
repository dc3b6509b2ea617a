"""The symmetric (block lower triangle, mirrored) accumulation of KFC's ``J Jᵀ`` in the
im2col lowering that ``tnconv.kfac`` uses for convolutions, against the dense product."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.execute import im2col
from tnconv.execute.squares import square_recipe
from tnconv.symbolic.builders.curvature import _square_base, input_patches


def _dense_kfc(x: torch.Tensor, kernel: int, padding: int, groups: int) -> torch.Tensor:
    u = torch.nn.functional.unfold(x, kernel, padding=padding)  # [N, C·K², O]
    n, _, positions = u.shape
    u = u.reshape(n, groups, -1, positions)
    return torch.einsum("ngio,ngjo->gij", u, u) / n


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 5),
    blocks=st.integers(1, 9),
    channels=st.integers(1, 6),
    groups=st.sampled_from([1, 2]),
    batch=st.integers(1, 4),
    budget=st.sampled_from([64, 2**20]),
)
def test_block_lower_triangle_then_mirror_equals_the_full_product(rows, blocks, channels, groups, batch, budget):
    torch.manual_seed(0)
    x = torch.randn(batch, channels * groups, 5, 4, dtype=torch.float64)
    base, scale = _square_base(input_patches(x.shape, 3, 1, 1, 1, groups), "expand")
    summed = tuple(a for a in range(len(base.output)) if a not in (1, 2))
    ordered = base.with_nodes(base.nodes, output=tuple(base.output[a] for a in (1, 2, *summed)))
    plan = im2col.im2col_plan(ordered)
    assert plan is not None
    d = channels * 9
    old = im2col.SYMMETRIC_ROWS, im2col.SYMMETRIC_BLOCKS
    try:
        im2col.SYMMETRIC_ROWS, im2col.SYMMETRIC_BLOCKS = rows, blocks  # force several row blocks
        gram = im2col.im2col_gram(plan, {"x": x}, (groups, d, -1), scale, budget=budget)
    finally:
        im2col.SYMMETRIC_ROWS, im2col.SYMMETRIC_BLOCKS = old
    torch.testing.assert_close(gram.reshape(groups, d, d), _dense_kfc(x, 3, 1, groups))


@pytest.mark.parametrize("rows", [1, 255, 256, 1000, 5000])
def test_symmetric_share_counts_the_blocks_written(rows):
    blocks = max(1, min(im2col.SYMMETRIC_BLOCKS, rows // im2col.SYMMETRIC_ROWS))
    assert im2col.symmetric_share(rows) == (blocks + 1) / (2 * blocks)


def test_kfc_factor_of_a_wide_layer_goes_through_the_blocks():
    torch.manual_seed(0)
    x = torch.randn(3, 40, 6, 6, dtype=torch.float64)  # d = 360 ≥ 2·128 rows: several blocks
    base, scale = _square_base(input_patches(x.shape, 3, 1, 1, 1, 1), "expand")
    assert square_recipe(base, (1,), (2,), scale, 8).route == "im2col"
    torch.testing.assert_close(tnconv.kfc_factor(x, 3, padding=1), _dense_kfc(x, 3, 1, 1))
