"""``tnconv draw OPERATION [hyper-parameters] -o FILE``: the diagram of an operation's network.

The file's extension picks the output: ``.png``, ``.svg``, ``.pdf`` (matplotlib, see
:func:`tnconv.diagrams.draw`), ``.dot``/``.gv`` (Graphviz text) or ``.tex`` (a TikZ picture).
Hyper-parameters take an int or comma-separated ints, one per spatial dimension
(``--stride 2,1``); ``--padding`` also takes ``same`` or ``valid``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..spec.convspec import ConvSpec
from ..symbolic.registry import ALIASES, OPERATIONS, operation_network
from .commands import UsageError

HELP = "Draw the tensor network of an operation (PNG, SVG, PDF, Graphviz .dot or TikZ .tex)."

TEXT_FORMATS = {".dot": "dot", ".gv": "dot", ".tex": "latex"}
PICTURE_FORMATS = (".png", ".svg", ".pdf")

# option -> (ConvSpec.create keyword (or "vectors"), per spatial dimension?, help)
_OPTIONS = {
    "--dims": ("dims", False, "number of spatial dimensions D"),
    "--batch": ("batch", False, "batch size N"),
    "--channels": ("in_channels", False, "input channels C_in"),
    "--out-channels": ("out_channels", False, "output channels C_out (default: C_in)"),
    "--groups": ("groups", False, "channel groups G"),
    "--input-size": ("input_size", True, "spatial input size I (for *_transpose: of the transposed convolution)"),
    "--kernel-size": ("kernel_size", True, "kernel size K"),
    "--stride": ("stride", True, "stride S"),
    "--padding": ("padding", True, "padding P, or same / valid"),
    "--dilation": ("dilation", True, "dilation"),
    "--output-padding": ("output_padding", True, "output padding of transposed convolutions"),
    "--vectors": ("vectors", False, "number of vectors M of MJPs and GGN factors"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join([*OPERATIONS, *ALIASES])
    parser.add_argument("operation", metavar="OPERATION", help=f"one of: {names}")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the diagram")
    defaults = {**ConvSpec.create().layer_keywords(), "out_channels": None, "vectors": 3}
    for option, (field, spatial, text) in _OPTIONS.items():
        default = defaults[field]
        default = default[0] if isinstance(default, tuple) and len(set(default)) == 1 else default
        metavar = "INT[,INT...]" if spatial else "INT"
        suffix = f" (default: {default})" if default is not None else ""
        parser.add_argument(option, dest=field, default=None, metavar=metavar, help=text + suffix)
    parser.add_argument("--simplified", action="store_true", help="draw the network after simplification")
    parser.add_argument("--sizes", action="store_true", help="label every leg with its size")
    parser.add_argument("--title", default=None, help="a title above the picture")


def _parse(option: str, text: str, spatial: bool) -> int | tuple[int, ...] | str:
    if option == "--padding" and text in ("same", "valid"):
        return text
    parts = text.split(",") if spatial else [text]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        kind = "an int or comma-separated ints" if spatial else "an int"
        raise UsageError(f"{option} must be {kind}, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def spec_and_vectors(args: argparse.Namespace) -> tuple[ConvSpec, int]:
    """The :class:`~tnconv.spec.ConvSpec` (and ``M``) given on the command line, for its operation."""
    given = {}
    for option, (field, spatial, _) in _OPTIONS.items():
        text = getattr(args, field, None)
        if text is not None:
            given[field] = _parse(option, text, spatial)
    vectors = given.pop("vectors", 3)
    operation = OPERATIONS.get(ALIASES.get(args.operation, args.operation))
    transposed = operation is not None and operation.transposed
    if not transposed:
        given.pop("output_padding", None)
    return ConvSpec.create(**given, transposed=transposed), vectors


def run(args: argparse.Namespace) -> int:
    path = Path(args.output)
    suffix = path.suffix.lower()
    if suffix not in PICTURE_FORMATS and suffix not in TEXT_FORMATS:
        known = ", ".join([*PICTURE_FORMATS, *TEXT_FORMATS])
        raise UsageError(f"-o FILE must end in one of {known}, got {args.output!r}")
    if path.is_dir():
        raise UsageError(f"-o {args.output!r} is a folder, not a file")
    if not path.parent.is_dir():
        raise UsageError(f"-o {args.output!r}: the folder {str(path.parent)!r} does not exist")
    network = operation_network(args.operation, *spec_and_vectors(args))
    try:
        if suffix in TEXT_FORMATS:
            from ..diagrams.dot import to_dot
            from ..diagrams.tikz import to_latex

            render = to_dot if TEXT_FORMATS[suffix] == "dot" else to_latex
            path.write_text(render(network, simplified=args.simplified, show_sizes=args.sizes), encoding="utf-8")
        else:
            from ..diagrams.picture import draw

            draw(network, path, title=args.title, simplified=args.simplified, show_sizes=args.sizes)
    except ImportError as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # unwritable file or folder
        raise UsageError(f"cannot write -o {args.output!r}: {error.strerror or error}") from None
    print(f"wrote {path}")
    return 0
