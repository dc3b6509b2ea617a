"""``tnconv bench-randomized``: randomized weight VJPs (tensor dropout) timed against the exact
VJP and against masking, per layer and kept fraction (see :mod:`tnconv.bench.randomized`)."""

from __future__ import annotations

import argparse

HELP = "randomized backpropagation: time of the sampled weight VJPs vs the exact VJP and masking, per keep"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.randomized import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from ..bench.randomized import run_from_args

    return run_from_args(args)
