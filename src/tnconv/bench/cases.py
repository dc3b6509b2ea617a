"""Benchmark cases: one convolution layer each, read from JSON-lines files (docs/reference.md §7).

A line describes one layer at batch size 1::

    {"model": "resnet18", "name": "conv1", "input_shape": [1, 3, 224, 224],
     "kernel_size": [7, 7], "stride": [2, 2], "padding": [3, 3], "dilation": [1, 1],
     "groups": 1, "in_channels": 3, "out_channels": 64, "bias": true, "transposed": false}

Required: ``input_shape`` (``[1, C_in, I_1, …, I_D]``), ``kernel_size`` and
``out_channels``. Optional, with defaults: ``model`` (the file's stem), ``name`` (the line
number), ``stride`` 1, ``padding`` 0, ``dilation`` 1, ``groups`` 1, ``in_channels``
(must equal ``input_shape[1]``), ``bias`` true, ``transposed`` false, ``output_padding`` 0
(transposed layers only). Spatial hyper-parameters are an int or a list of ``D`` ints. For a
transposed layer ``input_shape`` is the input of the transposed convolution. Unknown fields
are errors (a typo must not silently fall back to a default).

The layers of real networks in ``data/convs.jsonl`` and three synthetic 4-d convolutions in
``data/conv4d.jsonl`` ship with the package.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ..caching import cached
from ..spec.convspec import ConvSpec

BUNDLED_FILES = ("convs.jsonl", "conv4d.jsonl")

#: The batch-size rule of docs/reference.md §7: ``clamp(BATCH_BUDGET // (C_in·∏I), 1, MAX_BATCH)``.
BATCH_BUDGET = 2**21
MAX_BATCH = 64

#: Layers run by default (without ``--full``): per network, layers that cover its kinds of
#: convolution (stems with large kernels, 3×3 strided, 1×1, depthwise, transposed, 1-d, 4-d),
#: preferring the cheaper ones, so that the default run stays within 3 minutes on 2 CPU cores.
#: Left to ``--full`` are e.g. the 512-channel 3×3 layers (their KFC factor alone is ~80
#: GMACs at the batch sizes of docs/reference.md §7) and the M5 audio stem (kernel 80, stride 16 on 8000 samples:
#: einconv's dense index pattern makes its input VJP take ~10 s per call).
DEFAULT_SUBSET: dict[str, tuple[str, ...]] = {
    "cifar10_3c3d": ("0",),
    "fmnist_2c2d": ("0",),
    "cifar100_allcnnc": ("0", "7"),
    "resnet18": ("layer2.0.conv1", "layer2.0.downsample.0"),
    "mobilenet_v2": ("features.4.conv.1.0", "features.5.conv.1.0", "features.5.conv.2"),
    "alexnet": ("features.0",),
    "vgg16": ("features.7",),
    "unet_decoder": ("0", "4", "5"),
    "m5_audio": ("3", "6"),
    "conv4d": ("small", "strided", "channels"),
}


class CaseFormatError(ValueError):
    """A malformed case line; the message names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, field: str | None, message: str):
        where = source + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.field = source, line, field


@dataclass(frozen=True)
class Case:
    """One convolution layer (hyper-parameters normalised to ``D``-tuples)."""

    model: str
    name: str
    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    bias: bool = True
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """``model/name``, unique within a run."""
        return f"{self.model}/{self.name}"

    @property
    def dims(self) -> int:
        return len(self.kernel_size)

    @property
    def in_channels(self) -> int:
        return self.input_shape[1]

    @property
    def spatial_size(self) -> tuple[int, ...]:
        return self.input_shape[2:]

    def spec(self, batch: int | None = None) -> ConvSpec:
        """The layer as a :class:`~tnconv.spec.ConvSpec` (at the case's batch 1, or ``batch``)."""
        return _case_spec(self, self.input_shape[0] if batch is None else batch)

    def weight_shape(self) -> tuple[int, ...]:
        """``[C_out, C_in/G, K…]``, or ``[C_in, C_out/G, K…]`` for a transposed layer."""
        return self.spec().weight_shape

    def output_spatial_size(self) -> tuple[int, ...]:
        return self.spec().output_size

    def to_json(self) -> dict:
        data = asdict(self)
        data.update({k: list(v) for k, v in data.items() if isinstance(v, tuple)})
        data["in_channels"] = self.in_channels
        if not self.transposed:
            del data["output_padding"]
        return data


def batch_size(case: Case, budget: int = BATCH_BUDGET, maximum: int = MAX_BATCH) -> int:
    """docs/reference.md §7's batch size ``clamp(budget // (C_in·∏I), 1, maximum)``.

    >>> batch_size(Case("m", "l", (1, 3, 32, 32), 8, (3, 3), (1, 1), (0, 0), (1, 1)))
    64
    >>> batch_size(Case("m", "l", (1, 64, 224, 224), 64, (3, 3), (1, 1), (1, 1), (1, 1)))
    1
    """
    return max(1, min(maximum, budget // (case.in_channels * math.prod(case.spatial_size))))


_FIELDS = {
    "model",
    "name",
    "input_shape",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "in_channels",
    "out_channels",
    "bias",
    "transposed",
    "output_padding",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_case(data: object, source: str, line: int, default_model: str) -> Case:
    """Validate one decoded JSON line and build its :class:`Case`."""

    def fail(field: str | None, message: str) -> CaseFormatError:
        return CaseFormatError(source, line, field, message)

    if not isinstance(data, dict):
        raise fail(None, f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    for field in ("input_shape", "kernel_size", "out_channels"):
        if field not in data:
            raise fail(field, "missing required field")

    shape = data["input_shape"]
    if not (isinstance(shape, list) and len(shape) >= 3 and all(_is_int(v) and v >= 1 for v in shape)):
        raise fail("input_shape", f"expected a list [N, C_in, I_1, ...] of at least 3 positive ints, got {shape!r}")
    dims = len(shape) - 2

    def spatial(field: str, default: int, minimum: int) -> tuple[int, ...]:
        value = data.get(field, default)
        if _is_int(value):
            value = [value] * dims
        if not (isinstance(value, list) and len(value) == dims and all(_is_int(v) and v >= minimum for v in value)):
            raise fail(field, f"expected an int >= {minimum} or a list of {dims} such ints, got {value!r}")
        return tuple(value)

    def integer(field: str, default: int | None) -> int:
        value = data.get(field, default)
        if not (_is_int(value) and value >= 1):
            raise fail(field, f"expected a positive int, got {value!r}")
        return value

    def boolean(field: str, default: bool) -> bool:
        value = data.get(field, default)
        if not isinstance(value, bool):
            raise fail(field, f"expected true or false, got {value!r}")
        return value

    def text(field: str, default: str) -> str:
        value = data.get(field, default)
        if not (isinstance(value, str) and value and "/" not in value):
            raise fail(field, f"expected a non-empty string without '/', got {value!r}")
        return value

    kernel = spatial("kernel_size", 1, 1)
    stride = spatial("stride", 1, 1)
    padding = spatial("padding", 0, 0)
    dilation = spatial("dilation", 1, 1)
    groups = integer("groups", 1)
    out_channels = integer("out_channels", None)
    in_channels = shape[1]
    if "in_channels" in data and integer("in_channels", None) != in_channels:
        raise fail("in_channels", f"{data['in_channels']!r} differs from input_shape[1] = {in_channels}")
    if in_channels % groups or out_channels % groups:
        raise fail("groups", f"{groups} does not divide in_channels={in_channels} and out_channels={out_channels}")
    transposed = boolean("transposed", False)
    if "output_padding" in data and not transposed:
        raise fail("output_padding", "only allowed for a transposed layer")
    output_padding = spatial("output_padding", 0, 0) if transposed else ()
    try:  # the one validation of a convolution: the ConvSpec the benchmark will use
        ConvSpec.create(
            dims=len(kernel),
            batch=1,
            in_channels=in_channels,
            out_channels=out_channels,
            groups=groups,
            input_size=shape[2:],
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            output_padding=output_padding or 0,
            transposed=transposed,
        )
    except ValueError as error:
        raise fail("kernel_size", f"inconsistent hyper-parameters: {error}") from None
    return Case(
        model=text("model", default_model),
        name=text("name", str(line)),
        input_shape=(1, *shape[1:]),
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=boolean("bias", True),
        transposed=transposed,
        output_padding=output_padding,
    )


def parse_cases(text: str, source: str, default_model: str = "custom") -> list[Case]:
    """Parse JSON-lines ``text`` (blank lines and lines starting with ``#`` are skipped).

    Raises:
        CaseFormatError: naming ``source``, the line number and the offending field.

    >>> parse_cases('{"input_shape": [1, 2, 5], "kernel_size": 3, "out_channels": 4}', "x.jsonl")[0].kernel_size
    (3,)
    >>> parse_cases('{"input_shape": [1, 2, 5], "kernel_size": 3}', "x.jsonl")
    Traceback (most recent call last):
    ...
    tnconv.bench.cases.CaseFormatError: x.jsonl, line 1, field 'out_channels': missing required field
    """
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise CaseFormatError(source, number, None, f"invalid JSON: {error.msg} (column {error.colno})") from None
        case = parse_case(data, source, number, default_model)
        if case.label in seen:
            raise CaseFormatError(source, number, "name", f"{case.label!r} already defined on line {seen[case.label]}")
        seen[case.label] = number
        cases.append(case)
    if not cases:
        raise CaseFormatError(source, None, None, "no cases found")
    return cases


def load_cases(path: str | Path) -> list[Case]:
    """Read a user's cases file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read cases file {str(path)!r}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"cannot read cases file {str(path)!r}: not UTF-8 text (byte {error.start}: {error.reason}); "
            "it must be JSON lines"
        ) from None
    return parse_cases(text, str(path), default_model=path.stem)


def bundled_cases() -> list[Case]:
    """The cases that ship with tnconv: layers of real networks and synthetic 4-d ones."""
    data = resources.files("tnconv.bench") / "data"
    cases: list[Case] = []
    for name in BUNDLED_FILES:
        cases += parse_cases((data / name).read_text(encoding="utf-8"), f"tnconv/bench/data/{name}")
    return cases


def networks(cases: list[Case]) -> list[str]:
    """Model names in order of first appearance."""
    return list(dict.fromkeys(case.model for case in cases))


def select_cases(
    cases: list[Case], nets: list[str] | None = None, subset: dict[str, tuple[str, ...]] | None = None
) -> list[Case]:
    """Keep the cases of ``nets`` (all if ``None``) and, if ``subset`` is given, its layers.

    A network that ``subset`` does not mention keeps all its layers.

    Raises:
        ValueError: if a name in ``nets`` is not a network of ``cases``.
    """
    known = networks(cases)
    if nets is not None:
        unknown = [net for net in nets if net not in known]
        if unknown:
            raise ValueError(f"--nets: unknown network {unknown[0]!r} (available: {', '.join(known)})")
        cases = [case for case in cases if case.model in nets]
    if subset is not None:
        cases = [case for case in cases if case.model not in subset or case.name in subset[case.model]]
    return cases


@cached(maxsize=4096)
def _case_spec(case: Case, batch: int) -> ConvSpec:
    return ConvSpec.create(
        dims=case.dims,
        batch=batch,
        in_channels=case.in_channels,
        out_channels=case.out_channels,
        groups=case.groups,
        input_size=case.spatial_size,
        kernel_size=case.kernel_size,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        output_padding=case.output_padding or 0,
        transposed=case.transposed,
    )
