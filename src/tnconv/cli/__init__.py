"""The ``tnconv`` command line (also ``python -m tnconv``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .commands import SUBCOMMANDS, UsageError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tnconv")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tnconv", description="Convolutions as tensor networks: benchmarks, diagrams and more."
    )
    parser.add_argument("--version", action="version", version=f"tnconv {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (UsageError, ValueError, TypeError) as error:
        parser.exit(2, f"tnconv {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
