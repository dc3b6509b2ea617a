"""The randomized digits example runs end to end (reduced: few images, one epoch; loose bounds only)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "randomized_digits.py"


def test_randomized_digits_example_reduced(capsys):
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("randomized_digits", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    threads = torch.get_num_threads()
    try:
        results = example.main(["--epochs", "1", "--train-size", "192", "--keeps", "1,0.25"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert list(results) == ["exact", "keep 0.25"]
    for name, r in results.items():
        assert f"| {name} |" in printed
        assert math.isfinite(r["train_loss"]) and r["backward_s"] > 0
        assert r["train_loss"] < 2.3  # below chance (ln 10 ≈ 2.30): it learns, also randomized
