"""Resident memory at each stage of ``EKFAC.update`` (where an EKFAC peak comes from).

Runs two updates of tnconv's EKFAC on the benchmark's ResNet-18 (``tnconv.bench.kfac``),
32×32 inputs, float32, one thread, and prints after each stage (factor pass, eigenbases,
correction pass) the current resident set (``VmRSS``) and its high-water mark (``VmHWM``)
from ``/proc/self/status`` (Linux): the high-water mark is what the benchmark's ``ru_maxrss``
reports, the current value shows what each stage left behind. Run one variant per process
(the high-water mark never falls):

    python examples/ekfac_memory_stages.py --batch 8 --approx expand
    python examples/ekfac_memory_stages.py --batch 8 --approx expand --keep-factors
    python examples/ekfac_memory_stages.py --batch 8 --approx expand --keep-factors --inverse-dtype float64
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import tnconv
from tnconv.bench.kfac import MODELS


def resident_mb() -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of this process in MiB."""
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--approx", default="expand", choices=("expand", "reduce"))
    parser.add_argument("--fisher", default="mc")
    parser.add_argument("--keep-factors", action="store_true", help="EKFAC(keep_factors=True), its default")
    parser.add_argument("--inverse-dtype", default="none", choices=("none", "float64"), help="none: the factors'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MODELS[args.model]()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BatchNorm layers keep their plain gradients
        ekfac = tnconv.kfac.EKFAC(
            model,
            torch.nn.CrossEntropyLoss(),
            approx=args.approx,
            fisher=args.fisher,
            inverse_dtype=None if args.inverse_dtype == "none" else torch.float64,
            keep_factors=args.keep_factors,
        )

    def mark(what: str) -> None:
        current, peak = resident_mb()
        print(f"{what:28s} resident {current:6d} MB   peak {peak:6d} MB", flush=True)

    def traced(method, before: str | None, after: str):  # type: ignore[no-untyped-def]
        def run(*a, **kw):  # type: ignore[no-untyped-def]
            if before:
                mark(before)
            result = method(*a, **kw)
            mark(after)
            return result

        return run

    ekfac._factor_pass = traced(ekfac._factor_pass, "  factor pass start", "  factor pass end")
    ekfac._bases = traced(ekfac._bases, None, "  eigenbases end")
    ekfac._correction_pass = traced(ekfac._correction_pass, None, "  correction pass end")
    mark("setup")
    for i in range(2):
        start = time.process_time()
        ekfac.update(x, y)
        mark(f"update {i} ({time.process_time() - start:.1f} s)")
    size = lambda tensors: sum(t.numel() * t.element_size() for t in tensors) / 2**20  # noqa: E731
    factors = size(t for f in ekfac.factors.values() for t in (f.A, f.B))
    bases = size(t for b in ekfac.eigenbases.values() for t in (b.A_eigvecs, b.B_eigvecs))
    print(
        f"stored: factors {factors:.0f} MB, eigenbases {bases:.0f} MB, corrections "
        f"{size(ekfac.corrections.values()):.0f} MB"
    )


if __name__ == "__main__":
    main()
