"""Sampling the kept subset of a leg: the options of randomized backpropagation and one draw.

- ``mode="bernoulli"``: every value is kept independently with probability ``keep``,
  rescaled by ``1/keep`` (when nothing is kept the estimate is zero);
- ``mode="fixed"``: a uniform subset of ``ceil(keep·size)`` values, without replacement,
  rescaled by ``size/kept``.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass, field

import torch

from ..spec.validation import check_choice, check_generator, check_probability

MODES = ("bernoulli", "fixed")


#: The tile estimators (:mod:`.tiles`): units are (sample, tile of output rows) pairs.
TILES = "tiles"
#: The per-position estimator: output positions sampled jointly (gathered windows).
POSITIONS = "positions"

#: ``leg=`` of the weight VJP → the network leg it slices (or :data:`TILES` / ``None`` for
#: the estimators that do not slice one leg of the VJP network). ``"spatial"`` is ``"tiles"``.
WEIGHT_LEGS = {"spatial": TILES, "tiles": TILES, "positions": None, "batch": "n"}


#: ``leg=`` of the input VJP → the network leg it slices (or :data:`TILES`).
INPUT_LEGS = {"channel": "co", "group": "g", "spatial": TILES, "tiles": TILES}


JOINT = "o"  # the joint output-position leg of :func:`windows_network`


def check_keep(keep: object, name: str = "keep") -> float:
    """``keep`` as a float in ``(0, 1]``; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    return check_probability(keep, name)


def check_mode(mode: object, name: str = "mode") -> str:
    """``mode`` is one of :data:`MODES`."""
    return check_choice(mode, MODES, name)


def legs_of(kind: str, dims: int) -> tuple[str, ...]:
    """The ``leg=`` values accepted for a ``kind`` (``"weight"`` or ``"input"``) VJP in ``dims`` dims."""
    named = WEIGHT_LEGS if kind == "weight" else INPUT_LEGS
    return tuple(named) + tuple(f"spatial:{d + 1}" for d in range(dims))


def check_leg(leg: object, kind: str, dims: int, name: str = "leg") -> str:
    options = legs_of(kind, dims)
    if not isinstance(leg, str) or leg not in options:
        raise ValueError(f"{name} must be one of {options} for the {kind} VJP of a {dims}-d convolution, got {leg!r}")
    return leg


def network_leg(leg: str) -> str | None:
    """The network leg that ``leg`` slices (``None`` for ``"positions"``, :data:`TILES` for
    the tile estimators)."""
    if leg.startswith("spatial:"):
        return f"o{leg.split(':')[1]}"
    return {**WEIGHT_LEGS, **INPUT_LEGS}[leg]


@dataclass(frozen=True)
class Draw:
    """A sampled subset of a leg: the kept positions (sorted) and the rescaling factor.

    ``kept`` is the same positions as an int64 tensor on the draw's device (made by
    :func:`sample`; built from ``indices`` on first use otherwise): the estimators index
    with it directly instead of converting the tuple at every call.

    >>> Draw((1, 4), 2.0).index(torch.device("cpu"))
    tensor([1, 4])
    """

    indices: tuple[int, ...]
    scale: float
    kept: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def index(self, device: torch.device) -> torch.Tensor:
        """The kept positions as an int64 tensor on ``device`` (made once per draw)."""
        kept = self.kept
        if kept is None or kept.device != device:
            if device.type == "cpu":  # (a view of an array: a third of torch.tensor(list)'s cost)
                kept = torch.frombuffer(array.array("q", self.indices), dtype=torch.long)
            else:
                kept = torch.tensor(self.indices, dtype=torch.long, device=device)
            object.__setattr__(self, "kept", kept)  # (a cache of the frozen draw's own indices)
        return kept


#: A fixed-size draw of at most this many values is sorted in Python (its index tensor made on
#: first use), a larger one by ``torch.sort``.
SORT_IN_PYTHON = 1024
#: A Bernoulli draw of at most this many values on the CPU picks its kept values in Python
#: (its index tensor made on first use), a larger one or one on an accelerator with
#: ``nonzero``. Measured (one thread): a whole draw of 16 / 64 values 5.2 / 7.7 µs in Python
#: against 10.7 / 11.4 µs with ``nonzero``; at 256 values Python is the slower (17 / 13 µs).
KEEP_IN_PYTHON = 128


def fixed_count(size: int, keep: float) -> int:
    """``ceil(keep·size)`` (at least 1), robust to rounding in ``keep·size``."""
    return max(1, min(size, math.ceil(keep * size - 1e-9 * size)))


def sample(
    size: int, keep: float, mode: str, generator: torch.Generator | None = None, *, checked: bool = False
) -> Draw | None:
    """Draw the kept subset of a leg of ``size`` values; ``None`` when nothing is kept
    (``checked``: the caller has validated ``generator`` already).

    >>> sample(10, 0.3, "fixed", torch.Generator().manual_seed(0)).scale
    3.3333333333333335
    """
    if not checked:
        check_generator(generator)
    # the draw is made outside any torch.func transform (vmap would refuse a random op): it
    # is shared by the vmapped examples, like the rest of the draw's bookkeeping
    with torch._C._DisableFuncTorch():
        return _sample(size, keep, mode, generator)


def _sample(size: int, keep: float, mode: str, generator: torch.Generator | None) -> Draw | None:
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "fixed":
        count = fixed_count(size, keep)
        kept = torch.randperm(size, generator=generator, device=device)[:count]
        if count <= SORT_IN_PYTHON:  # (a few values: sorting them in Python saves two torch ops)
            return Draw(tuple(sorted(kept.tolist())), size / count)
        kept = kept.sort().values
        return Draw(tuple(kept.tolist()), size / count, kept)
    uniform = torch.rand(size, generator=generator, device=device)
    if device.type == "cpu" and size <= KEEP_IN_PYTHON:  # the same values as below, in Python
        indices = tuple(i for i, u in enumerate(uniform.tolist()) if u < keep)
        return Draw(indices, 1.0 / keep) if indices else None
    kept = (uniform < keep).nonzero().flatten()
    return Draw(tuple(kept.tolist()), 1.0 / keep, kept) if kept.numel() else None
