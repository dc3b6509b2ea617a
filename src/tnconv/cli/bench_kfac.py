"""``tnconv bench-kfac``: whole-network KFAC/EKFAC factor time and peak memory, tnconv vs
curvlinops (and BackPACK), each run in its own process (see :mod:`tnconv.bench.kfac`)."""

from __future__ import annotations

import argparse

HELP = "whole-network KFAC/EKFAC side by side: tnconv vs curvlinops (and BackPACK), time and peak memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.kfac import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from ..bench.kfac import run as run_bench

    return run_bench(args)
