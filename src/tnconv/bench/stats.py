"""Ratio statistics: per operation and baseline, median/min/max of tnconv's time ÷ the baseline's."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RatioStats:
    """Summary of the ratios ``tnconv / baseline`` over cases (below 1: tnconv is faster).

    Attributes:
        count: number of cases.
        median, minimum, maximum: of the ratios.
        geomean: geometric mean of the ratios.
        q1, q3: the quartiles of the ratios (their difference is the IQR).
        worst_case, best_case: the cases with the largest and the smallest ratio.
    """

    count: int
    median: float
    minimum: float
    maximum: float
    geomean: float
    worst_case: str
    best_case: str
    q1: float = math.nan
    q3: float = math.nan

    @property
    def iqr(self) -> float:
        """Interquartile range of the ratios."""
        return self.q3 - self.q1

    def to_json(self) -> dict:
        return asdict(self)


def ratio_stats(ratios: Iterable[tuple[str, float]]) -> RatioStats:
    """Statistics of ``(case, ratio)`` pairs.

    >>> s = ratio_stats([("a", 2.0), ("b", 0.5), ("c", 1.0)])
    >>> s.median, s.minimum, s.maximum, s.geomean, s.worst_case, s.best_case
    (1.0, 0.5, 2.0, 1.0, 'a', 'b')
    """
    pairs = [(case, float(ratio)) for case, ratio in ratios]
    if not pairs:
        raise ValueError("ratio_stats needs at least one ratio")
    if any(not (ratio > 0 and math.isfinite(ratio)) for _, ratio in pairs):
        raise ValueError(f"ratios must be positive and finite, got {[r for _, r in pairs]}")
    values = [ratio for _, ratio in pairs]
    worst = max(pairs, key=lambda pair: pair[1])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    best = min(pairs, key=lambda pair: pair[1])
    return RatioStats(
        count=len(values),
        median=statistics.median(values),
        minimum=best[1],
        maximum=worst[1],
        geomean=math.exp(statistics.fmean(math.log(v) for v in values)),
        worst_case=worst[0],
        best_case=best[0],
        q1=q1,
        q3=q3,
    )


def summarize(rows: Iterable[tuple[str, str, str, float]]) -> dict[str, dict[str, RatioStats]]:
    """Group ``(operation, baseline, case, ratio)`` rows into ``{operation: {baseline: stats}}``.

    Operations and baselines keep the order in which they first appear.

    >>> summary = summarize([("fwd", "torch", "a", 1.5), ("fwd", "torch", "b", 0.5), ("fwd", "einconv", "a", 0.2)])
    >>> summary["fwd"]["torch"].median, list(summary["fwd"])
    (1.0, ['torch', 'einconv'])
    """
    grouped: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for operation, baseline, case, ratio in rows:
        grouped.setdefault(operation, {}).setdefault(baseline, []).append((case, ratio))
    return {op: {base: ratio_stats(pairs) for base, pairs in by_base.items()} for op, by_base in grouped.items()}
