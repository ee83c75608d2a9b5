"""What the bench times, and how its rounds become one speedup with a spread.

Pure (numpy only). A category's plans become a few weighted sequence lengths (``timed_lengths``):
every distinct length when there are few (padded sizing: one per bucket), else the middle plan of
each of ``groups`` equal slices of the plans sorted by length (exact sizing: every plan has its
own). Each round times every length once, interleaved with ``full``; a round's ratio is full's
time over the weighted mean of the category's times in *that* round (``round_ratios``), so a
machine that slows down between rounds moves numerator and denominator together. The report
gives the median and interquartile range of those ratios (``spread``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..planning.buckets import FULL
from .errors import EvaluationError


@dataclass(frozen=True, order=True)
class Length:
    """One engine call the bench times: ``kept`` keep_indices on ``bucket``'s engine, a sequence of
    ``sequence`` image tokens (kept + low-frequency)."""

    sequence: int
    kept: int
    bucket: str


def timed_lengths(plans: Sequence[Any], groups: int) -> list[tuple[Length, float]]:
    """(length, weight) pairs standing for ``plans`` (TokenPlans of one category); weights sum to 1.

    Plans on ``full`` form their own entry (they run the full engine). The others: each distinct
    length with its share when there are at most ``groups`` of them, otherwise ``groups`` slices
    of the plans sorted by length, each represented by its middle plan (lower middle).
    """
    if groups < 1:
        raise EvaluationError(f"groups must be at least 1, got {groups}")
    n = len(plans)
    if n == 0:
        raise EvaluationError("no plans to time")
    lengths = sorted(Length(p.length, int(p.keep_indices.numel()), p.bucket) for p in plans)
    full = [x for x in lengths if x.bucket == FULL]
    rest = [x for x in lengths if x.bucket != FULL]
    out: list[tuple[Length, float]] = []
    if full:
        out.append((full[0], len(full) / n))
    distinct = sorted(set(rest))
    if len(distinct) <= groups:
        out += [(x, rest.count(x) / n) for x in distinct]
    else:
        for part in np.array_split(np.arange(len(rest)), groups):
            out.append((rest[int(part[(len(part) - 1) // 2])], len(part) / n))
    return out


def round_ratios(full_s: Sequence[float], times: dict[Length, Sequence[float]],
                 weighted: Sequence[tuple[Length, float]]) -> list[float]:
    """Per round r: ``full_s[r]`` over the weighted mean of ``times[length][r]``."""
    rounds = len(full_s)
    if any(len(times[x]) != rounds for x, _ in weighted):
        raise EvaluationError("every length must be timed once per round")
    return [full_s[r] / sum(w * times[x][r] for x, w in weighted) for r in range(rounds)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range (numpy's linear quartiles) of ``values``."""
    q25, median, q75 = (float(v) for v in np.percentile(np.asarray(values, float), [25, 50, 75]))
    return {"median": median, "q25": q25, "q75": q75, "iqr": q75 - q25}


def ideal_speedup(full_tokens: int, weighted: Sequence[tuple[Length, float]], flops: Callable[[int], float]) -> float:
    """The same ratio in FLOPs: full's step over the weighted mean of the lengths' steps."""
    return flops(full_tokens) / sum(w * flops(x.sequence) for x, w in weighted)
