"""Train a small CNN on scikit-learn's handwritten digits with KFAC-expand, KFAC-reduce, SGD and Adam.

The 8×8 digits ship with scikit-learn (no download). Every method trains the same network
from the same initialisation for the same number of epochs on the same batches; the
KFAC runs precondition plain SGD with the same learning rate as the SGD run. Prints a
table of final training loss, test loss, test accuracy and wall time, and saves the
training-loss curves.

    python examples/kfac_digits.py                      # ~1 minute on 2 CPU cores
    python examples/kfac_digits.py --epochs 2 --no-plot
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable, Sequence

import torch

from tnconv.kfac import KFACOptimizer


def load_data(train_size: int | None, seed: int) -> tuple[torch.Tensor, ...]:
    """Digits as ``[N, 1, 8, 8]`` in ``[0, 1]``, split 80/20 at random."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(y))
    train, test = order[:split], order[split:]
    if train_size is not None:
        train = train[:train_size]
    return x[train], y[train], x[test], y[test]


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    with torch.no_grad():
        logits = model(x)
        return torch.nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


Step = Callable[[torch.Tensor, torch.Tensor], None]


def methods(lr: float, damping: float) -> dict[str, Callable[[torch.nn.Module], Step]]:
    """Each method: model → a function that takes one training step on a batch."""
    loss_fn = torch.nn.CrossEntropyLoss()

    def plain(make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> Callable[[torch.nn.Module], Step]:
        def build(model: torch.nn.Module) -> Step:
            opt = make_optimizer(model)

            def step(x: torch.Tensor, y: torch.Tensor) -> None:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

            return step

        return build

    def kfac(approx: str) -> Callable[[torch.nn.Module], Step]:
        def build(model: torch.nn.Module) -> Step:
            opt = KFACOptimizer(model, loss_fn, lr=lr, approx=approx, damping=damping, T_stats=1, T_inv=5, kl_clip=1e-2)

            def step(x: torch.Tensor, y: torch.Tensor) -> None:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step(x, y)

            return step

        return build

    return {
        "KFAC-expand": kfac("expand"),
        "KFAC-reduce": kfac("reduce"),
        "SGD": plain(lambda m: torch.optim.SGD(m.parameters(), lr=lr)),
        "Adam": plain(lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)),
    }


def train(
    build: Callable[[torch.nn.Module], Step],
    initial: torch.nn.Module,
    data: tuple[torch.Tensor, ...],
    epochs: int,
    batch_size: int,
    seed: int,
) -> dict[str, object]:
    x_train, y_train, x_test, y_test = data
    model = copy.deepcopy(initial)
    step = build(model)
    generator = torch.Generator().manual_seed(seed)  # the same batches for every method
    curve = [evaluate(model, x_train, y_train)[0]]
    elapsed = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=generator)
        start = time.perf_counter()
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            step(x_train[batch], y_train[batch])
        elapsed += time.perf_counter() - start
        curve.append(evaluate(model, x_train, y_train)[0])
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    return {
        "train_loss": curve[-1],
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "seconds": elapsed,
        "curve": curve,
    }


def table(results: dict[str, dict[str, object]]) -> str:
    lines = [
        "| method | train loss | test loss | test accuracy | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['train_loss']:.4f} | {r['test_loss']:.4f} | {r['test_accuracy']:.3f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        curve = r["curve"]
        assert isinstance(curve, list)
        ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_yscale("log")
    ax.set_title("CNN on scikit-learn digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1, help="of SGD and of the SGD inside KFAC")
    parser.add_argument("--damping", type=float, default=0.1)
    parser.add_argument("--train-size", type=int, default=None, help="use only this many training images")
    parser.add_argument("--seed", type=int, default=0)
    # one thread: with more, OpenMP's busy-waiting makes these tiny layers far slower on a loaded machine
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default="kfac_digits.png", help="where to save the loss curves")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args.train_size, args.seed)
    torch.manual_seed(args.seed)
    initial = make_model()
    results = {
        name: train(build, initial, data, args.epochs, args.batch_size, args.seed)
        for name, build in methods(args.lr, args.damping).items()
    }
    print(f"{args.epochs} epochs, batch size {args.batch_size}, {len(data[1])} training / {len(data[3])} test images")
    print(table(results))
    if not args.no_plot:
        plot(results, args.plot)
        print(f"loss curves: {args.plot}")
    assert all(math.isfinite(r["train_loss"]) for r in results.values())  # type: ignore[arg-type]
    return results


if __name__ == "__main__":
    main()
