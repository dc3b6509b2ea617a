"""Subcommands of the ``tnconv`` command line, one module each.

A subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). :data:`SUBCOMMANDS` maps names to modules; they are
imported only when used, so ``tnconv --help`` stays fast.
"""

SUBCOMMANDS: dict[str, str] = {
    "bench": "tnconv.cli.bench",
    "bench-kfac": "tnconv.cli.bench_kfac",
    "bench-randomized": "tnconv.cli.bench_randomized",
    "draw": "tnconv.cli.draw",
}


class UsageError(Exception):
    """A bad command-line value: reported as one line and exit code 2, without a trace."""
