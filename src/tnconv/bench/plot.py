"""The figure of a benchmark run: the distribution of tnconv/baseline ratios per operation.

One box (quartiles, whiskers to the extremes) with the individual cases as dots per
operation and baseline, on a logarithmic axis with the line ratio = 1 marked (below it
tnconv is faster). Needs ``matplotlib`` (the ``plot`` extra).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

COLORS = {"torch": "#1f77b4", "einconv": "#ff7f0e"}


def plot_ratios(
    rows: Iterable[tuple[str, str, str, float]],
    out_dir: Path,
    title: str,
    stem: str = "ratios",
    ylabel: str = "tnconv time / baseline time (log)",
) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``out_dir`` from ``(operation, baseline, case, ratio)`` rows.

    Raises:
        ImportError: if matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[float]] = {}
    for operation, baseline, _, ratio in rows:
        groups.setdefault((operation, baseline), []).append(ratio)
    if not groups:
        return []
    jitter = random.Random(0)
    figure, axes = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) + 1.5), 4.2), layout="constrained")
    positions = range(1, len(groups) + 1)
    boxes = axes.boxplot(
        list(groups.values()),
        positions=list(positions),
        whis=(0, 100),
        widths=0.55,
        patch_artist=True,
        medianprops={"color": "black"},
    )
    for box, (_, baseline) in zip(boxes["boxes"], groups):
        box.set_facecolor(COLORS.get(baseline, "#999999"))
        box.set_alpha(0.35)
    for position, ((_, baseline), ratios) in zip(positions, groups.items()):
        xs = [position + jitter.uniform(-0.15, 0.15) for _ in ratios]
        axes.scatter(xs, ratios, s=12, color=COLORS.get(baseline, "#555555"), zorder=3, linewidths=0)
    axes.axhline(1.0, color="crimson", linewidth=1.2, linestyle="--", label="ratio = 1")
    axes.set_yscale("log")
    axes.set_xticks(list(positions), [f"{op}\nvs {baseline}" for op, baseline in groups], fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for path in paths:
        figure.savefig(path, dpi=150)
    plt.close(figure)
    return paths
