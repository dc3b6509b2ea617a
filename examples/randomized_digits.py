"""Train a small CNN on scikit-learn's digits with exact and randomized backpropagation.

The 8×8 digits ship with scikit-learn (no download); they are upsampled to 32×32. Every
method trains the same network (``tnconv.nn.Conv2d`` layers) from the same initialisation,
with the same batches and SGD with momentum; the randomized runs estimate every
convolution's weight gradient from a ``keep`` fraction of its units
(``backward_leg="spatial"`` by default: (image, tile of rows) units, where the cost model of
``tnconv.randomized.tile_layout`` makes that one tile per image here: 64 images are
units enough; ``--leg positions`` for single output positions), ``backward_mode="fixed"``;
the input and bias gradients stay exact. Prints final training loss, test loss, test
accuracy and the time spent in ``backward()`` per method (``--clock cpu``: the calling
thread's CPU time with one thread, robust when other jobs share the machine).

    python examples/randomized_digits.py                 # ~1.5 minutes on 2 CPU cores
    python examples/randomized_digits.py --epochs 1 --train-size 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

import tnconv


def load_data(train_size: int | None, seed: int, size: int = 32) -> tuple[torch.Tensor, ...]:
    """Digits as ``[N, 1, size, size]`` in ``[0, 1]`` (bilinear upsampling), split 80/20 at random."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(y))
    train, test = order[:split], order[split:]
    if train_size is not None:
        train = train[:train_size]
    return x[train], y[train], x[test], y[test]


def make_model(keep: float, leg: str = "spatial") -> torch.nn.Module:
    """Two 3×3 convolutions (randomized weight gradients when ``keep < 1``) and a linear head."""
    options = dict(backward_keep=keep, backward_leg=leg, backward_mode="fixed")
    return torch.nn.Sequential(
        tnconv.nn.Conv2d(1, 32, 3, padding=1, **options),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        tnconv.nn.Conv2d(32, 64, 3, padding=1, **options),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 8 * 8, 10),
    )


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    with torch.no_grad():
        logits = model(x)
        return torch.nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def train(
    keep: float, data: tuple[torch.Tensor, ...], epochs: int, batch: int, lr: float, seed: int,
    leg: str = "spatial", clock: str = "wall",
) -> dict:
    """Train one model; returns its final losses, accuracy, seconds spent in backward and the model."""
    x_train, y_train, x_test, y_test = data
    now = CLOCKS[clock]
    torch.manual_seed(seed)  # the same initialisation for every method
    model = make_model(keep, leg)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order_gen = torch.Generator().manual_seed(seed)  # the same batches for every method
    backward = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=order_gen)
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            begin = now()
            loss.backward()
            backward += now() - begin
            optimizer.step()
    train_loss, _ = evaluate(model, x_train, y_train)
    test_loss, accuracy = evaluate(model, x_test, y_test)
    return dict(train_loss=train_loss, test_loss=test_loss, test_accuracy=accuracy, backward_s=backward, model=model)


def estimator_errors(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, keeps: Sequence[float], legs: Sequence[str],
    draws: int = 16, seed: int = 0,
) -> list[dict]:
    """Every estimator on the real weight gradients of ``model``'s convolutions for one batch:
    RMS relative error of one draw, CPU time over the exact VJP's (one thread, median of the
    draws, alternating with torch's exact VJP) and the error at equal time,
    ``rel.err · sqrt(time/exact)``."""
    convs = [(i, m) for i, m in enumerate(model) if isinstance(m, torch.nn.Conv2d)]
    saved: dict[int, list[torch.Tensor]] = {}
    handles = []
    for i, conv in convs:
        def hook(module, inputs, output, i=i):  # type: ignore[no-untyped-def]
            saved[i] = [inputs[0].detach()]
            output.register_hook(lambda grad, i=i: saved[i].append(grad.detach()))
        handles.append(conv.register_forward_hook(hook))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for handle in handles:
        handle.remove()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    generator = torch.Generator().manual_seed(seed)
    try:
        for i, conv in convs:
            inputs, grad = saved[i]
            hyper = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
            exact = torch.nn.grad.conv2d_weight(inputs, conv.weight.shape, grad, **hyper)
            for leg in legs:
                for keep in keeps:
                    errors, times, exact_times = [], [], []
                    for _ in range(draws):
                        start = time.thread_time()
                        torch.nn.grad.conv2d_weight(inputs, conv.weight.shape, grad, **hyper)
                        exact_times.append(time.thread_time() - start)
                        start = time.thread_time()
                        estimate = tnconv.randomized.conv_weight_vjp(
                            inputs, grad, conv.kernel_size, **hyper, keep=keep, leg=leg, mode="fixed",
                            generator=generator,
                        )
                        times.append(time.thread_time() - start)
                        errors.append(float((estimate - exact).norm() / exact.norm()) ** 2)
                    error = (sum(errors) / draws) ** 0.5
                    ratio = sorted(times)[draws // 2] / sorted(exact_times)[draws // 2]
                    equal_time = error * ratio**0.5
                    rows.append(dict(layer=i, leg=leg, keep=keep, error=error, time=ratio, equal_time=equal_time))
    finally:
        torch.set_num_threads(threads)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--keeps", default="1,0.5,0.25,0.1", help="comma-separated kept fractions (1: exact)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leg", default="spatial", help="backward_leg of the randomized runs")
    parser.add_argument("--clock", default="wall", choices=tuple(CLOCKS), help="cpu: thread CPU time, 1 thread")
    parser.add_argument(
        "--errors", default=None, metavar="LEGS",
        help="after training, compare these estimators (e.g. spatial,positions,batch,spatial:1) on the exact "
        "model's real gradients of one batch: error of one draw, time, error at equal time",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1 if args.clock == "cpu" else args.threads)
    data = load_data(args.train_size, args.seed)
    results = {}
    print("| method | train loss | test loss | test accuracy | backward s | backward / exact |")
    print("|---|---|---|---|---|---|")
    keeps = [float(k) for k in args.keeps.split(",")]
    for keep in keeps:
        name = "exact" if keep == 1.0 else f"keep {keep:g}"
        results[name] = r = train(keep, data, args.epochs, args.batch, args.lr, args.seed, args.leg, args.clock)
        reference = next(iter(results.values()))["backward_s"]
        print(
            f"| {name} | {r['train_loss']:.3f} | {r['test_loss']:.3f} | {r['test_accuracy']:.3f} | "
            f"{r['backward_s']:.2f} | {r['backward_s'] / reference:.2f} |",
            flush=True,
        )
    if args.errors:
        exact = results.get("exact") or train(1.0, data, args.epochs, args.batch, args.lr, args.seed)
        model = exact["model"]
        batch = data[0][: args.batch], data[1][: args.batch]
        print()
        print("| layer | leg | keep | rel. error of one draw | time / exact | error at equal time |")
        print("|---|---|---|---|---|---|")
        for row in estimator_errors(model, *batch, [k for k in keeps if k < 1], args.errors.split(",")):
            print(f"| conv {row['layer']} | {row['leg']} | {row['keep']:g} | {row['error']:.3f} | "
                  f"{row['time']:.2f} | {row['equal_time']:.3f} |", flush=True)
    return results


if __name__ == "__main__":
    main()
