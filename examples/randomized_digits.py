"""Train a small CNN on scikit-learn's digits with exact and randomized backpropagation.

The 8×8 digits ship with scikit-learn (no download); they are upsampled to 32×32 so that
the convolutions have rows to sample (a 3×3 layer on 32 rows has 4 tiles of 8 rows per
image, and the second one on 16 rows 2 tiles: see ``tnconv.randomized.tile_layout``). Every
method trains the same network (``tnconv.nn.Conv2d`` layers) from the same initialisation, with the same batches and SGD
with momentum; the randomized runs estimate every convolution's weight gradient from a
``keep`` fraction of its (image, tile) units (``backward_leg="spatial"``,
``backward_mode="fixed"``; the input and bias gradients stay exact). Prints final training
loss, test loss, test accuracy and the time spent in ``backward()`` per method.

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


def make_model(keep: float) -> torch.nn.Module:
    """Two 3×3 convolutions (randomized weight gradients when ``keep < 1``) and a linear head."""
    options = dict(backward_keep=keep, backward_leg="spatial", backward_mode="fixed")
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


def train(keep: float, data: tuple[torch.Tensor, ...], epochs: int, batch: int, lr: float, seed: int) -> dict:
    """Train one model; returns its final losses, accuracy and seconds spent in backward."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)  # the same initialisation for every method
    model = make_model(keep)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order_gen = torch.Generator().manual_seed(seed)  # the same batches for every method
    backward = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=order_gen)
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            begin = time.perf_counter()
            loss.backward()
            backward += time.perf_counter() - begin
            optimizer.step()
    train_loss, _ = evaluate(model, x_train, y_train)
    test_loss, accuracy = evaluate(model, x_test, y_test)
    return dict(train_loss=train_loss, test_loss=test_loss, test_accuracy=accuracy, backward_s=backward)


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--keeps", default="1,0.5,0.25,0.1", help="comma-separated kept fractions (1: exact)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args.train_size, args.seed)
    results = {}
    print("| method | train loss | test loss | test accuracy | backward s | backward / exact |")
    print("|---|---|---|---|---|---|")
    for keep in (float(k) for k in args.keeps.split(",")):
        name = "exact" if keep == 1.0 else f"keep {keep:g}"
        results[name] = r = train(keep, data, args.epochs, args.batch, args.lr, args.seed)
        reference = next(iter(results.values()))["backward_s"]
        print(
            f"| {name} | {r['train_loss']:.3f} | {r['test_loss']:.3f} | {r['test_accuracy']:.3f} | "
            f"{r['backward_s']:.2f} | {r['backward_s'] / reference:.2f} |",
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()
