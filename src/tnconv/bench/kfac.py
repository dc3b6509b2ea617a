"""Whole-network KFAC side by side (docs/reference.md §7): tnconv vs curvlinops (and BackPACK).

Factor computation only (no inversion; EKFAC includes its eigendecompositions and
corrections), same model, loss (``CrossEntropyLoss``), batch and Fisher type, every
``fisher × approx``; each library in its own child process so that its peak resident
memory (``ru_maxrss``) is its own; the median of ``--reps`` runs after ``--warmup``.
The *floor* is the forward pass plus the backward passes to the layer outputs (what every
library must do), run by tnconv's hooks with the factor work switched off.

Run: ``tnconv bench-kfac`` (or ``python -m tnconv.bench.kfac``); ``--quick`` for a
smaller batch. curvlinops (``pip install --no-deps curvlinops-for-pytorch einops
linear_operator scipy tqdm``) and BackPACK (``backpack-for-pytorch unfoldNd``) are
optional: a missing one is reported and skipped.

The models are written here (no torchvision): a ResNet-18 for 32×32 inputs (3×3 stem,
BasicBlocks 2-2-2-2 with BatchNorm, 64…512 channels) and a MobileNetV2-style network
(inverted residuals with depthwise convolutions, width 1.0, CIFAR strides).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
from torch import nn

FISHERS = ("mc", "empirical", "type-2")
APPROXES = ("expand", "reduce")
LIBRARIES = ("tnconv", "curvlinops", "backpack", "floor")
CLOCKS = ("cpu", "wall")

# ------------------------------------------------------------------------------ models


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.short is None else self.short(x)))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs (He et al., 2016, CIFAR variant)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.fc(h.mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) with CIFAR strides for 32×32 inputs."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


MODELS = {"resnet18": ResNet18, "mobilenetv2": MobileNetV2}

# ------------------------------------------------------------------------ child runs


def _kfac_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters(recurse=False)]


def _runner(  # type: ignore[no-untyped-def]
    library: str, method: str, model: nn.Module, fisher: str, approx: str, x, y, keep_factors: bool = False
):
    """A function computing the factors once (tnconv's EKFAC keeps its factors only with
    ``keep_factors``: curvlinops' ``EKFACLinearOperator`` drops its factors once decomposed)."""
    loss_fn = nn.CrossEntropyLoss()
    if library == "tnconv":
        import tnconv

        options = {"keep_factors": keep_factors} if method == "ekfac" else {}
        cls = tnconv.kfac.EKFAC if method == "ekfac" else tnconv.kfac.KFAC
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kfac = cls(model, loss_fn, approx=approx, fisher=fisher, inverse_dtype=None, **options)
        return lambda: kfac.update(x, y)
    if library == "floor":
        import tnconv
        from tnconv.kfac.loss import backprop_vectors

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kfac = tnconv.kfac.KFAC(model, loss_fn, approx=approx, fisher=fisher)

        def floor() -> None:
            output, anchor, _ = kfac._hooked_forward(x, lambda name, a, b: lambda g: None)
            vectors = backprop_vectors(loss_fn, output, y, fisher)
            kfac._backward(output, anchor, vectors)

        return floor
    if library == "curvlinops":
        from curvlinops import EKFACLinearOperator, KFACLinearOperator

        cls = EKFACLinearOperator if method == "ekfac" else KFACLinearOperator
        op = cls(
            model,
            loss_fn,
            _kfac_params(model),
            [(x, y)],
            fisher_type=fisher,
            kfac_approx=approx,
            check_deterministic=False,
        )

        def run() -> None:
            op.compute_kronecker_factors()
            if method == "ekfac":
                op._input_covariances_eigenvectors, op._gradient_covariances_eigenvectors = {}, {}
                op.compute_eigenvalue_correction()

        return run
    if library == "backpack":
        from backpack import backpack, extend
        from backpack.extensions import KFAC as BKFAC
        from backpack.extensions import KFLR

        if method == "ekfac" or approx != "expand" or fisher == "empirical":
            raise NotImplementedError("BackPACK has KFAC (mc) and KFLR (type-2), expand only")
        model, loss = extend(model), extend(loss_fn)
        extension = BKFAC() if fisher == "mc" else KFLR()

        def run() -> None:
            model.zero_grad()
            with backpack(extension):
                loss(model(x), y).backward()

        return run
    raise ValueError(f"unknown library {library!r}")


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MODELS[args.model]()
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    try:
        run = _runner(args.library, args.method, model, args.fisher, args.approx, x, y, args.keep_factors)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(args.warmup):
            run()
        times, cpu = [], []
        for _ in range(args.reps):
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"times": times, "cpu": cpu, "peak_mb": peak / 1024, "setup_mb": rss_before / 1024}))
    except Exception as error:  # reported by the parent, never a crash of the table
        print(json.dumps({"error": f"{type(error).__name__}: {error}"[:200]}))


def _spawn(library: str, method: str, model: str, fisher: str, approx: str, options: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        "-m",
        "tnconv.bench.kfac",
        "--child",
        library,
        "--method",
        method,
        "--model",
        model,
        "--fisher",
        fisher,
        "--approx",
        approx,
        "--batch",
        str(options.batch),
        "--reps",
        str(options.reps),
        "--warmup",
        str(options.warmup),
        "--threads",
        str(options.threads),
        *(["--keep-factors"] if options.keep_factors else []),
    ]
    try:
        env = dict(os.environ)
        if options.malloc_threshold:
            # a fixed glibc mmap threshold: freed large blocks go back to the system at once, so
            # peak RSS tracks live memory rather than the allocator's fragmentation
            env["MALLOC_MMAP_THRESHOLD_"] = str(options.malloc_threshold)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=options.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {options.timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def _available(module: str) -> bool:
    try:
        __import__(module)
    except Exception:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tnconv bench-kfac", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="resnet18,mobilenetv2", help="comma-separated, of " + ",".join(MODELS))
    parser.add_argument("--fishers", default=",".join(FISHERS))
    parser.add_argument("--approxes", default=",".join(APPROXES))
    parser.add_argument("--methods", default="kfac,ekfac", help="kfac and/or ekfac")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child (1: CPU time is work)")
    parser.add_argument("--clock", default="cpu", help="cpu (process time: robust on a shared machine) or wall")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child process")
    parser.add_argument(
        "--malloc-threshold",
        type=int,
        default=0,
        metavar="BYTES",
        help="run every child with MALLOC_MMAP_THRESHOLD_=BYTES (glibc): peak RSS then tracks live memory",
    )
    parser.add_argument("--quick", action="store_true", help="batch 16, 2 reps (for a first look)")
    parser.add_argument("--no-backpack", action="store_true")
    parser.add_argument(
        "--keep-factors",
        action="store_true",
        help="tnconv's EKFAC keeps its KFAC factors (EKFAC's default; without it they are released "
        "as curvlinops' EKFACLinearOperator does)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="kfac", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="resnet18", help=argparse.SUPPRESS)
    parser.add_argument("--fisher", default="mc", help=argparse.SUPPRESS)
    parser.add_argument("--approx", default="expand", help=argparse.SUPPRESS)


def _split(text: str, allowed: tuple[str, ...] | dict, name: str) -> list[str]:
    values = [v for v in text.split(",") if v]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"--{name}: {','.join(bad) or 'nothing'} not among {','.join(allowed)}")
    return values


def run(args: argparse.Namespace) -> int:
    if args.child:
        args.library = args.child
        child(args)
        return 0
    if args.quick:
        args.batch, args.reps = 16, 2
    models = _split(args.models, MODELS, "models")
    fishers, approxes = _split(args.fishers, FISHERS, "fishers"), _split(args.approxes, APPROXES, "approxes")
    methods = _split(args.methods, ("kfac", "ekfac"), "methods")
    _split(args.clock, CLOCKS, "clock")
    others = [
        lib for lib in ("curvlinops", "backpack") if _available(lib) and not (lib == "backpack" and args.no_backpack)
    ]
    print(
        f"tnconv bench-kfac: batch {args.batch}, 32x32, float32, {args.threads} thread(s), {args.clock} time, median "
        f"of {args.reps} after {args.warmup} warm-up, one child process per run"
        f"{'; EKFAC keeps its factors' if args.keep_factors and 'ekfac' in methods else ''}"
        f"{f', MALLOC_MMAP_THRESHOLD_={args.malloc_threshold}' if args.malloc_threshold else ''}; baselines: "
        f"{', '.join(others) or 'none installed'}",
        flush=True,
    )
    results: list[dict] = []
    for model in models:
        for fisher in fishers:
            _progress(
                results,
                args,
                ("-", fisher, "-", "floor", model),
                _spawn("floor", "kfac", model, fisher, "expand", args),
            )
            for method in methods:
                for approx in approxes:
                    for lib in ("tnconv", *others):
                        if lib == "backpack" and not _backpack_applies(method, fisher, approx):
                            continue
                        result = _spawn(lib, method, model, fisher, approx, args)
                        _progress(results, args, (method, fisher, approx, lib, model), result)
    print()
    print(summary(results, args.timeout))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


def _backpack_applies(method: str, fisher: str, approx: str) -> bool:
    """BackPACK has KFAC (mc) and KFLR (type-2), KFAC-expand only, no EKFAC."""
    return method == "kfac" and approx == "expand" and fisher != "empirical"


def _progress(results: list[dict], args: argparse.Namespace, key: tuple[str, ...], result: dict) -> None:
    method, fisher, approx, library, model = key
    row = {"model": model, "method": method, "fisher": fisher, "approx": approx, "library": library, **result}
    clock = "cpu" if args.clock == "cpu" else "times"
    if clock in result:
        row["median_s"] = statistics.median(result[clock])
    results.append(row)
    text = f"error: {result['error']}" if "error" in result else f"{row['median_s']:8.2f} s {result['peak_mb']:8.0f} MB"
    print(f"{model:12} {method:6} {fisher:9} {approx:7} {library:10} {text}", flush=True)


def _find(results: list[dict], **keys: str) -> dict | None:
    for row in results:
        if all(row.get(k) == v for k, v in keys.items()):
            return row
    return None


def _cells(row: dict | None, timeout: float) -> tuple[str, str]:
    """``(seconds, MB)`` of one run as table cells."""
    if row is None:
        return "-", "-"
    if "median_s" not in row:
        return (f"> {timeout:.0f}" if row.get("error", "").startswith("timed out") else "error"), "-"
    return f"{row['median_s']:.2f}", f"{row['peak_mb']:.0f}"


def _ratio(mine: dict | None, theirs: dict | None, key: str) -> str:
    if mine and theirs and "median_s" in mine and "median_s" in theirs:
        return f"{mine[key] / theirs[key]:.2f}"
    return "-"


def _to_floor(row: dict | None, floor: dict | None) -> str:
    if row and floor and "median_s" in row and "median_s" in floor:
        return f"{row['median_s'] / floor['median_s']:.2f}x / {row['peak_mb'] - floor['peak_mb']:+.0f}"
    return "-"


def summary(results: list[dict], timeout: float = 0.0) -> str:
    """The side-by-side table (markdown) of a benchmark's result rows.

    Per ``model × method × fisher × approx``: tnconv's and curvlinops' seconds and peak
    resident MB, their ratios, the floor (forward + backward to the layer outputs, per
    fisher) and each library's distance to it (time x, memory + MB); then BackPACK's runs.

    >>> run = dict(model="m", method="kfac", fisher="mc", approx="reduce")
    >>> rows = [dict(run, method="-", approx="-", library="floor", median_s=1.0, peak_mb=500.0),
    ...         dict(run, library="tnconv", median_s=1.2, peak_mb=600.0),
    ...         dict(run, library="curvlinops", median_s=2.4, peak_mb=800.0)]
    >>> print(summary(rows).splitlines()[-1])
    | m | kfac | mc | reduce | 1.20 | 2.40 | 0.50 | 600 | 800 | 0.75 | 1.00 / 500 | 1.20x / +100 | 2.40x / +300 |
    """
    lines = [
        "| model | method | fisher | approx | tnconv s | curvlinops s | time ratio | tnconv MB | curvlinops MB "
        "| memory ratio | floor s / MB | tnconv vs floor | curvlinops vs floor |",
        "|---" * 13 + "|",
    ]
    backpack = []
    keys = dict.fromkeys(
        (r["model"], r["method"], r["fisher"], r["approx"]) for r in results if r["library"] != "floor"
    )
    for model, method, fisher, approx in keys:
        where = dict(model=model, method=method, fisher=fisher, approx=approx)
        mine, theirs = _find(results, library="tnconv", **where), _find(results, library="curvlinops", **where)
        floor = _find(results, library="floor", model=model, fisher=fisher)
        (t_mine, m_mine), (t_theirs, m_theirs), (t_floor, m_floor) = (_cells(r, timeout) for r in (mine, theirs, floor))
        time_ratio, memory_ratio = _ratio(mine, theirs, "median_s"), _ratio(mine, theirs, "peak_mb")
        lines.append(
            f"| {model} | {method} | {fisher} | {approx} | {t_mine} | {t_theirs} | {time_ratio} | {m_mine} "
            f"| {m_theirs} | {memory_ratio} | {t_floor} / {m_floor} | {_to_floor(mine, floor)} "
            f"| {_to_floor(theirs, floor)} |"
        )
        other = _find(results, library="backpack", **where)
        if other is not None:
            t_other, m_other = _cells(other, timeout)
            note = other.get("error", "")[:80]
            backpack.append(
                f"| {model} | {fisher} | {approx} | {t_other} | {m_other} | {_ratio(mine, other, 'median_s')} "
                f"| {_ratio(mine, other, 'peak_mb')} | {note} |"
            )
    if backpack:
        lines += [
            "",
            "| model | fisher | approx | BackPACK s | BackPACK MB | tnconv / BackPACK time | memory | note |",
            "|---" * 8 + "|",
            *backpack,
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
