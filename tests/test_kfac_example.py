"""The digits example runs end to end (reduced: few images, two epochs; loose bounds only)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kfac_digits.py"


def load_example():
    spec = importlib.util.spec_from_file_location("kfac_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_reduced(capsys, tmp_path):
    pytest.importorskip("sklearn")
    example = load_example()
    threads = torch.get_num_threads()
    try:
        results = example.main(["--epochs", "2", "--train-size", "320", "--no-plot"])
    finally:
        torch.set_num_threads(threads)  # main() sets it for the whole process
    printed = capsys.readouterr().out
    assert list(results) == ["KFAC-expand", "KFAC-reduce", "SGD", "Adam"]
    for name, r in results.items():
        assert f"| {name} |" in printed
        assert len(r["curve"]) == 3 and all(math.isfinite(v) for v in r["curve"])
    for name in ("KFAC-expand", "KFAC-reduce"):  # sanity: KFAC learns (chance: loss 2.3, accuracy 0.1)
        assert results[name]["train_loss"] < 0.8 * results[name]["curve"][0]
        assert results[name]["test_accuracy"] > 0.3
    if importlib.util.find_spec("matplotlib") is not None:
        path = tmp_path / "curves.png"
        example.plot(results, str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
