"""Paired differences and the defaults rule (evaluation/stats.py) on synthetic tables."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from hilo_export.evaluation.stats import choose_variant, paired, summarize, t_quantile


def test_summary_matches_the_textbook_interval():
    values = [0.5, -0.1, 0.3, 0.9, 0.2, 0.4]
    s = summarize(values)
    mean, sd = np.mean(values), np.std(values, ddof=1)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    assert (s.n, s.mean, s.sd) == (6, pytest.approx(mean), pytest.approx(sd))
    assert (s.ci_low, s.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert t_quantile(2) == pytest.approx(12.706, abs=1e-3)  # one degree of freedom


def test_paired_uses_common_finite_keys_only():
    a = {("x", 0): 30.0, ("x", 1): 31.0, ("y", 0): 29.0, ("z", 0): float("inf")}
    b = {("x", 0): 29.0, ("x", 1): 30.5, ("y", 0): 29.5, ("z", 0): 28.0, ("w", 0): 10.0}
    d = paired(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx((1.0 + 0.5 - 0.5) / 3)


def test_single_pair_has_no_interval():
    s = summarize([1.0])
    assert s.n == 1 and math.isinf(s.ci_low) and math.isinf(s.ci_high)


def _table(offsets, sd, n=36, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(30, 3, n)  # case difficulty: shared by every variant, removed by pairing
    return {name: {i: float(base[i] + off + rng.normal(0, sd)) for i in range(n)} for name, off in offsets.items()}


def test_rule_picks_the_fastest_variant_not_measurably_worse():
    fidelity = _table({"slow-best": 0.0, "fast-equal": -0.02, "fastest-worse": -0.8}, sd=0.05)
    speed = {"slow-best": 1.3, "fast-equal": 1.7, "fastest-worse": 2.5}
    choice = choose_variant(fidelity, speed, margin_db=0.2)
    assert choice.most_faithful == "slow-best"
    assert choice.chosen == "fast-equal"
    assert "fastest-worse" not in choice.acceptable
    assert choice.versus_best["fastest-worse"].ci_high < -0.2


def test_rule_keeps_the_most_faithful_when_the_data_cannot_clear_the_margin():
    # the fast variant is on average as good, but so noisy that its CI reaches below -margin
    fidelity = _table({"best": 0.0, "fast-noisy": 0.0}, sd=0.0)
    rng = np.random.default_rng(3)
    fidelity["fast-noisy"] = {k: v + float(rng.normal(0, 2.0)) for k, v in fidelity["fast-noisy"].items()}
    fidelity["best"] = {k: v + 0.3 for k, v in fidelity["best"].items()}
    choice = choose_variant(fidelity, {"best": 1.0, "fast-noisy": 2.0}, margin_db=0.2)
    assert choice.most_faithful == "best"
    assert choice.versus_best["fast-noisy"].ci_low < -0.2
    assert choice.chosen == "best"


def test_rule_breaks_speed_ties_by_fidelity():
    fidelity = _table({"a": 0.0, "b": 0.1, "c": 0.05}, sd=0.01)
    choice = choose_variant(fidelity, {"a": 2.0, "b": 1.0, "c": 2.0}, margin_db=0.2)
    assert choice.most_faithful == "b"
    assert choice.chosen == "c"  # a and c equally fast; c more faithful


def test_rule_needs_a_speed_per_variant():
    with pytest.raises(ValueError, match="no speed"):
        choose_variant({"a": {0: 1.0}}, {}, 0.2)


def test_a_speed_target_needs_the_iqr_lower_end():
    from hilo_export.evaluation.stats import speed_target

    assert speed_target(4.0, 4.1, 3.76, 4.48)["met"] is False  # the median clears it, the spread does not
    assert speed_target(4.0, 4.3, 4.05, 4.48) == {"target": 4.0, "median": 4.3, "iqr": [4.05, 4.48], "met": True}


def test_edit_pairs_pair_each_edit_with_its_dense_twin():
    from hilo_export.evaluation.stats import EditPairs

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    region = np.ones((8, 8), bool)
    pairs = EditPairs()
    for i in range(4):
        dense = np.clip(truth.astype(int) + rng.integers(-3, 4, truth.shape), 0, 255).astype(np.uint8)
        hilo = np.clip(dense.astype(int) + rng.integers(-6, 7, truth.shape), 0, 255).astype(np.uint8)
        pairs.add(("mask", "photo", i), hilo, dense, truth, region)
    summary = pairs.summary()
    assert summary["edits"] == 4 and summary["truth_gap"]["n"] == 4
    gaps = [r["dense_vs_truth"] - r["hilo_vs_truth"] for r in pairs.rows.values()]
    assert summary["truth_gap"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-4)
    assert summary["truth_gap"]["mean"] > 0  # HiLo's extra noise puts it further from the truth
