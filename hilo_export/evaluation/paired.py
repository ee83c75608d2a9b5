"""Spread of per-edit figures: mean, standard deviation, count and a 95% confidence interval.

``paired_stats`` takes per-edit values, typically paired differences (HiLo's in-mask PSNR
against dense minus the seed-to-seed floor of the same edit), and gives the Student-t interval
of their mean. Fewer than two values have no spread: ``sd`` and ``ci95`` are then None.
"""

from __future__ import annotations

import math
from typing import Sequence

from .errors import EvaluationError


def paired_stats(differences: Sequence[float]) -> dict[str, float | int | list[float] | None]:
    """{mean, sd, n, ci95: [low, high]} of ``differences`` (finite numbers)."""
    values = [float(v) for v in differences]
    if any(not math.isfinite(v) for v in values):
        raise EvaluationError("paired_stats needs finite values; cap infinite PSNRs before")
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half]}
