import pytest
import torch
from hypothesis import given

import tnconv
from tnconv.execute.squares import square_recipe
from tnconv.symbolic.builders.gradients import per_sample_weight_grad_network
from tnconv.symbolic.squares import materialized_square, square_network

from .reference import TORCH_CONV
from .reference_curvature import layer_jacobians
from .strategies import conv_cases


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def case_tensors(case, seed=0):
    x, w, _ = case.tensors(seed=seed)
    y = TORCH_CONV[case.dims](x, w, None, **case.kwargs())
    v = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return x, w, v


def reference_grads(x, w, v, kwargs):
    """Per-sample gradients [N, C_out, Ci, K…] and [N, C_out] as v_n · J_n (torch.func)."""
    jac_w, jac_b = layer_jacobians(x, w.shape, kwargs)
    vn = v.flatten(1)
    return torch.einsum("nr,nrp->np", vn, jac_w).reshape(x.shape[0], *w.shape), torch.einsum("nr,nrp->np", vn, jac_b)


@given(case=conv_cases())
def test_per_sample_grads_and_second_moment_match_torch_func(case):
    x, w, v = case_tensors(case)
    kw = case.kwargs()
    grads, grads_b = reference_grads(x, w, v, kw)
    if case.bias:
        result, result_b = tnconv.per_sample_weight_grad(x, v, case.kernel_size, **kw, bias=True)
        assert rel_err(result_b, grads_b) < 1e-10
        moment, moment_b = tnconv.grad_second_moment(x, v, case.kernel_size, **kw, bias=True)
        assert rel_err(moment_b, grads_b.square().sum(0)) < 1e-10
    else:
        result = tnconv.per_sample_weight_grad(x, v, case.kernel_size, **kw)
        moment = tnconv.grad_second_moment(x, v, case.kernel_size, **kw)
    assert result.shape == grads.shape and moment.shape == w.shape
    assert rel_err(result, grads) < 1e-10
    assert rel_err(moment, grads.square().sum(0)) < 1e-10
    # the networks themselves, unsimplified
    network = tnconv.networks.grad_second_moment(x.shape, v.shape, case.kernel_size, **kw)
    for strategy in ("einsum", "auto"):
        assert rel_err(network.contract(x=x, v=v, strategy=strategy), grads.square().sum(0)) < 1e-10
    per_sample = tnconv.networks.per_sample_weight_grad(x.shape, v.shape, case.kernel_size, **kw)
    for strategy in ("einsum", "auto"):
        assert rel_err(per_sample.contract(x=x, v=v, strategy=strategy), grads) < 1e-10


def test_per_sample_grads_4d():
    kw = dict(stride=(1, 2, 1, 1), padding=(1, 0, 0, 1), dilation=(1, 1, 2, 1), groups=2)
    x = torch.randn(2, 4, 3, 4, 5, 3, dtype=torch.float64)
    w = torch.randn(2, 2, 2, 2, 2, 3, dtype=torch.float64)
    v = torch.randn(2, 2, 4, 2, 3, 3, dtype=torch.float64)
    grads, _ = reference_grads(x, w, v, kw)
    torch.testing.assert_close(tnconv.per_sample_weight_grad(x, v, w.shape[2:], **kw), grads)
    torch.testing.assert_close(tnconv.grad_second_moment(x, v, w.shape[2:], **kw), grads.square().sum(0))


def test_second_moment_network_reads_each_tensor_twice():
    tn = tnconv.networks.grad_second_moment((3, 4, 8), (3, 6, 6), 3, groups=2)
    assert tn.inputs == ("x", "v")
    assert sorted(n.name for n in tn.nodes if n.kind == "input") == ["v", "v'", "x", "x'"]
    assert tn.output_shape == (6, 2, 3)


def test_second_moment_both_routes_agree():
    """Directly as one network, or from materialised per-sample gradients: same value; the
    recipe takes the route with fewer flops (here materialising, as for most convolutions)."""
    x, v = torch.randn(3, 4, 7, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)
    per_sample = per_sample_weight_grad_network(x.shape, v.shape, 3)
    recipe = square_recipe(per_sample, (1, 2, 3), (), 1.0)
    assert (recipe.direct is not None) == (recipe.direct_flops <= recipe.materialized_flops)
    expected = tnconv.per_sample_weight_grad(x, v, 3).square().sum(0)
    direct = square_network(per_sample.simplify(), keep=(1, 2, 3)).contract(x=x, v=v)
    materialised = materialized_square(per_sample, keep=(1, 2, 3)).contract(J=per_sample.contract(x=x, v=v))
    torch.testing.assert_close(direct, expected)
    torch.testing.assert_close(materialised, expected)
    torch.testing.assert_close(tnconv.grad_second_moment(x, v, 3), expected)


def test_bad_input():
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    v = torch.randn(2, 6, 4, dtype=torch.float64)
    tnconv.per_sample_weight_grad(x, v, 3, groups=2)
    with pytest.raises(ValueError, match=r"v must have shape \[N, C_out, O_1\] = \(2, 6, 4\)"):
        tnconv.per_sample_weight_grad(x, v[..., :3], 3)
    with pytest.raises(ValueError, match="v must have shape"):
        tnconv.grad_second_moment(x, v[:1], 3)
    with pytest.raises(ValueError, match="v must have shape"):
        tnconv.grad_second_moment(x, v[..., None], 3)
    with pytest.raises(ValueError, match="kernel_size"):
        tnconv.per_sample_weight_grad(x, v, 9)
    with pytest.raises(ValueError, match="groups"):
        tnconv.per_sample_weight_grad(x, v, 3, groups=3)
    with pytest.raises(ValueError, match="v has 6 channels"):
        tnconv.grad_second_moment(x, v, 3, groups=4)
    with pytest.raises(TypeError, match="v has dtype"):
        tnconv.grad_second_moment(x, v.float(), 3)
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        tnconv.per_sample_weight_grad(x, None, 3)
