"""The bench's timing arithmetic (evaluation/timing.py) and category speed, without engines."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hilo_export.evaluation.errors import EvaluationError
from hilo_export.evaluation.timing import Length, ideal_speedup, round_ratios, spread, timed_lengths


def plan(length: int, bucket: str, n_lowfreq: int = 4):
    kept = length if bucket == "full" else length - n_lowfreq
    return SimpleNamespace(length=length, bucket=bucket, keep_indices=torch.arange(kept))


def test_padded_plans_are_timed_at_each_bucket_with_its_share():
    plans = [plan(100, "s")] * 3 + [plan(200, "m")] + [plan(400, "full")] * 2
    got = timed_lengths(plans, groups=3)
    assert got == [(Length(400, 400, "full"), 2 / 6), (Length(100, 96, "s"), 3 / 6), (Length(200, 196, "m"), 1 / 6)]


def test_exact_plans_are_timed_at_the_middle_of_equal_slices():
    plans = [plan(n, "s" if n < 60 else "m") for n in (10, 20, 30, 40, 50, 60, 70, 80, 90)]
    got = timed_lengths(plans[::-1], groups=3)  # order of the plans does not matter
    assert [(x.sequence, x.bucket) for x, _ in got] == [(20, "s"), (50, "s"), (80, "m")]
    assert [w for _, w in got] == pytest.approx([1 / 3] * 3)
    # uneven slices: weights follow the slice sizes, the lower middle represents an even slice
    got = timed_lengths(plans[:8], groups=3)
    assert [(x.sequence, w) for x, w in got] == [(20, 3 / 8), (50, 3 / 8), (70, 2 / 8)]
    assert sum(w for _, w in timed_lengths(plans + [plan(400, "full")], 2)) == pytest.approx(1.0)


def test_timed_lengths_refuse_nonsense():
    with pytest.raises(EvaluationError, match="groups must be at least 1"):
        timed_lengths([plan(10, "s")], 0)
    with pytest.raises(EvaluationError, match="no plans"):
        timed_lengths([], 3)


def test_round_ratios_pair_each_round_with_itself():
    a, b, full = Length(10, 6, "s"), Length(20, 16, "m"), Length(40, 40, "full")
    # round 2 runs twice as slow across the board: its ratio is the same as round 1's
    times = {a: [1.0, 2.0, 1.0], b: [3.0, 6.0, 2.0], full: [8.0, 16.0, 8.0]}
    ratios = round_ratios(times[full], times, [(a, 0.5), (b, 0.5)])
    assert ratios == pytest.approx([8 / 2, 16 / 4, 8 / 1.5])
    with pytest.raises(EvaluationError, match="once per round"):
        round_ratios([1.0], times, [(a, 1.0)])


def test_spread_is_median_and_interquartile_range():
    values = [3.4, 7.4, 4.0, 4.1, 3.9, 4.2, 4.0]
    s = spread(values)
    assert s["median"] == pytest.approx(4.0)
    assert s["q25"] == pytest.approx(np.percentile(values, 25)) and s["q75"] == pytest.approx(np.percentile(values, 75))
    assert s["iqr"] == pytest.approx(s["q75"] - s["q25"]) and s["iqr"] < 1.0  # the 7.4 outlier does not move it far


def test_ideal_speedup_weights_flops():
    a, b = Length(10, 6, "s"), Length(20, 16, "m")
    assert ideal_speedup(40, [(a, 0.5), (b, 0.5)], lambda n: n * n) == pytest.approx(1600 / 250)


def test_category_speed_reports_median_iqr_and_both_ideals():
    from hilo_export.evaluation.latency import category_speed

    a, b, full = Length(10, 6, "s"), Length(20, 16, "m"), Length(40, 40, "full")
    times = {a: [1.0, 1.0, 2.0], b: [2.0, 3.0, 2.0], full: [4.0, 4.0, 4.0]}
    plans = [plan(10, "s"), plan(20, "m")]
    speed = category_speed([(a, 0.5), (b, 0.5)], full, times, plans, flops=lambda n: n, dev=lambda n: n * n, steps=8,
                           planner_s=0.01)
    ratios = [4 / 1.5, 4 / 2.0, 4 / 2.0]
    assert speed["speedup_rounds"] == pytest.approx(ratios)
    assert speed["speedup"] == pytest.approx(2.0) and speed["speedup_q25"] == pytest.approx(2.0)
    assert speed["speedup_q75"] == pytest.approx(np.percentile(ratios, 75))
    assert speed["step_s_hilo"] == pytest.approx(2.0) and speed["step_s_dense"] == pytest.approx(4.0)
    assert speed["ideal_speedup"] == pytest.approx(40 / 15) == speed["ideal_speedup_plans"]
    assert speed["achieved_over_ideal"] == pytest.approx(2.0 / (40 / 15))
    assert speed["flux1_dev_ideal_speedup"] == pytest.approx(1600 / 250)
    assert speed["edit_s_hilo_composed"] == pytest.approx(0.01 + 16.0)


def test_sweep_rule_takes_the_fastest_variant_that_keeps_the_targets():
    from hilo_export.evaluation.sweep import chosen_variant, keeps_targets, mean_speedup

    def variant(label, speed, db, gap):
        cat = {"ideal_speedup": speed, "psnr_mask_hilo_vs_dense": db, "psnr_mask_dense_vs_truth": 20.0,
               "psnr_mask_hilo_vs_truth": 20.0 - gap}
        return {"label": label, "categories": {"small": cat, "medium": cat, "large": cat}}

    fast_bad, slow_good, mid_good = variant("fast", 4.0, 28.0, 0.1), variant("slow", 2.0, 33.0, 0.1), variant("mid", 3.0, 31.0, 0.15)
    assert not keeps_targets(fast_bad) and keeps_targets(mid_good) and mean_speedup(mid_good) == pytest.approx(3.0)
    assert chosen_variant({"variants": [fast_bad, slow_good, mid_good]}) == "mid"
    # nothing keeps the truth margin: the fastest above the 30 dB floor
    wide = [variant("a", 3.0, 31.0, 0.3), variant("b", 2.0, 32.0, 0.25), fast_bad]
    assert chosen_variant({"variants": wide}) == "a"
    # nothing above the floor: the most faithful (highest worst category), however slow
    below = [fast_bad, variant("slower", 2.0, 29.0, 0.5)]
    below[0]["categories"] = {**below[0]["categories"], "large": {**below[0]["categories"]["large"],
                                                                    "psnr_mask_hilo_vs_dense": 35.0}}
    assert chosen_variant({"variants": below}) == "slower"  # fast's small and medium are 28.0
    assert chosen_variant({"variants": []}) is None
