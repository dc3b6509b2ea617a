"""The side-by-side KFAC benchmark's models and command line (no timing)."""

from __future__ import annotations

import pytest
import torch

from tnconv.bench import kfac as bench
from tnconv.cli import build_parser


@pytest.mark.parametrize("name", list(bench.MODELS))
def test_models_take_32x32_inputs_and_kfac_sees_their_layers(name):
    torch.manual_seed(0)
    model = bench.MODELS[name]()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == (20 if name == "resnet18" else 52)
    if name == "mobilenetv2":
        assert any(m.groups == m.in_channels > 1 for m in convs)  # depthwise


def test_one_tnconv_run_and_the_floor_run_in_process():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    for library in ("tnconv", "floor"):
        bench._runner(library, "kfac", bench.ResNet18(), "empirical", "reduce", x, y)()


def test_command_line_options_are_checked():
    args = build_parser().parse_args(["bench-kfac", "--models", "vgg"])
    with pytest.raises(ValueError, match="--models"):
        bench.run(args)
    with pytest.raises(ValueError, match="--fishers"):
        bench.run(build_parser().parse_args(["bench-kfac", "--fishers", "type-1"]))
