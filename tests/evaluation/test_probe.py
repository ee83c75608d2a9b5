import numpy as np
import pytest
import torch

from hilo_export.evaluation.ablation import SELECTIONS, Ablation, crop_box, selection_plan
from hilo_export.evaluation.metrics import Pooled
from hilo_export.evaluation.probe import classical_fills, conditions, probe_set, run_probe
from hilo_export.planning.plan import MASK, PlannerConfig, plan_tokens
from hilo_export.reference import model as ref
from hilo_export.reference.procedural import FAMILIES


def _plan(size=128, seed=0):
    item = probe_set(size, 1, seed=seed)[0]
    # padded: a budget beyond the mask for the selections to fill, whatever the default sizing
    return plan_tokens(item.image, item.mask, ref.TOKEN_SIZE, "s,m,l", PlannerConfig(sizing="padded")), item


def test_probe_set_is_seeded_and_covers_every_family():
    a, b = probe_set(64, 2), probe_set(64, 2)
    assert [i.family for i in a] == [f for f in FAMILIES for _ in range(2)]
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, probe_set(64, 2, seed=8)[0].image)
    assert all(0.02 < i.mask.mean() < 0.4 and i.mask.dtype == bool for i in a)


def test_classical_fills_keep_known_pixels_and_differ_inside():
    item = probe_set(64, 1)[0]
    fills = classical_fills(item.image, item.mask)
    for filled in fills.values():
        assert np.array_equal(filled[~item.mask], item.image[~item.mask])
    assert not np.array_equal(fills["push-pull"][item.mask], fills["biharmonic"][item.mask])


def test_selections_keep_the_mask_and_hilos_budget():
    plan, _ = _plan()
    assert plan.bucket != "full"
    mask = torch.nonzero(plan.kinds.reshape(-1) == MASK).flatten()
    for name in ("hilo", "random_context", "no_lowfreq"):  # the ones that can fill a budget fill HiLo's exactly
        other = selection_plan(name, plan)
        assert other.length == plan.length == len(other.positions) and other.capacity == plan.capacity, name
        assert set(mask.tolist()) <= set(other.keep_indices.tolist()), name
    assert selection_plan("no_lowfreq", plan).lowfreq is None
    core, only = selection_plan("core_only", plan), selection_plan("mask_only", plan)
    assert torch.equal(core.keep_indices, mask) and core.lowfreq == plan.lowfreq
    assert torch.equal(only.keep_indices, mask) and only.lowfreq is None and only.length == len(mask)
    # hole only: the undilated mask tokens (the ring removed too), with the low-frequency tokens
    from hilo_export.planning.inputs import as_mask, token_mask

    _, item = _plan()
    hole, _ = token_mask(as_mask(item.mask), ref.TOKEN_SIZE, dilation=0)
    bare = selection_plan("hole_only", plan, hole=hole)
    assert torch.equal(bare.keep_indices, torch.nonzero(hole.reshape(-1)).flatten()) and bare.lowfreq == plan.lowfreq
    assert set(bare.keep_indices.tolist()) < set(mask.tolist())
    with pytest.raises(ValueError, match="undilated"):
        selection_plan("hole_only", plan)
    random_a, random_b = selection_plan("random_context", plan, 0), selection_plan("random_context", plan, 1)
    assert not torch.equal(random_a.keep_indices, random_b.keep_indices)
    with pytest.raises(ValueError, match="random_context"):
        selection_plan("everything", plan)


def test_crop_box_holds_the_mask_within_about_the_budget():
    plan, _ = _plan()
    r0, r1, c0, c1 = crop_box(plan)
    rows, cols = torch.nonzero(plan.kinds == MASK, as_tuple=True)
    assert r0 <= rows.min() and rows.max() < r1 and c0 <= cols.min() and cols.max() < c1
    area = (r1 - r0) * (c1 - c0)
    bbox = (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
    assert area >= plan.capacity or area == plan.n_tokens
    # grown from the mask's box by one row or column at a time: at most one past the budget
    assert area <= max(bbox, plan.capacity + 2 * max(plan.grid))


def test_pooled_psnr_and_conditions():
    pooled = Pooled()
    a = np.zeros((4, 4, 3), np.uint8)
    region = np.ones((4, 4), bool)
    pooled.add("x", a, a + 1, region)
    pooled.add("x", a, a + 3, region)
    assert pooled.psnr("x") == pytest.approx(10 * np.log10(255**2 / 5))
    pooled.add("same", a, a, region)
    assert pooled.psnr("same") is None and pooled.psnr("never") is None
    met = conditions({"psnr_mask_dense_vs_truth": 25.0, "psnr_mask_best_fill_vs_truth": 21.0,
                      "psnr_mask_hilo_vs_dense": 35.0, "psnr_mask_core_only_vs_dense": 33.0})
    assert met["model_over_best_fill_met"] and not met["context_cost_met"]
    assert met["context_cost_db"] == pytest.approx(2.0)


def test_probe_runs_every_selection_on_the_model():
    model = ref.new_model()
    ablation = Ablation(model, ref.Decoder(), steps=1)
    # 128 px (16 x 16 tokens): small enough to be quick, large enough that the probe's masks compress
    result = run_probe(ablation, 128, 1, selections=SELECTIONS, progress=lambda _: None)
    assert result["grid"] == [16, 16] and result["images"] == len(FAMILIES)
    assert result["edits_full"] < result["images"]  # some edits really ran every selection
    assert set(result["families"]) == set(FAMILIES) and set(result["selections"]) == set(SELECTIONS)
    ratios = {name: entry["token_ratio"] for name, entry in result["selections"].items()}
    assert all(0 < ratio <= 1 for ratio in ratios.values()), ratios
    assert ratios["mask_only"] < ratios["hilo"]  # HiLo adds context and low-frequency tokens to the mask
    # the zero-correction start is the push-pull fill exactly: dense equals it
    assert result["psnr_mask_dense_vs_truth"] == pytest.approx(result["psnr_mask_fills_vs_truth"]["push-pull"], abs=0.05)


def test_photo_ablation_pairs_every_selection_with_hilo():
    from hilo_export.evaluation.ablation import run_photo_ablation

    ablation = Ablation(ref.new_model(), ref.Decoder(), steps=1)
    result = run_photo_ablation(ablation, 128, 1, images=("coffee",), selections=("hilo", "random_context", "hole_only"),
                                seeds=(0, 1), draws=2, progress=lambda _: None)
    n = result["edits"]
    assert n > 0 and result["draws"] == 2 and result["noise_seeds"] == [0, 1]
    sel = result["selections"]
    assert sel["hilo"]["paired"]["vs_truth_minus_hilo"] == {"mean": 0.0, "sd": 0.0, "n": n, "ci_low": 0.0, "ci_high": 0.0}
    for name in ("random_context", "hole_only"):
        d = sel[name]["paired"]["vs_truth_minus_hilo"]
        assert d["n"] == n and d["ci_low"] <= d["mean"] <= d["ci_high"]
