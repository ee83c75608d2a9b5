"""The selection study (evaluation/study.py) and its paired table (stats.selection_table), with a
stand-in editor: the bookkeeping, not the model."""

import numpy as np

from hilo_export.evaluation.ablation import SelectionEdit
from hilo_export.evaluation.stats import selection_table
from hilo_export.evaluation.study import read_records, run_study, study_variants
from hilo_export.planning import PlannerConfig, plan_tokens


class FakeAblation:
    """Dense: the truth plus seeded noise; a plan's edit: dense plus noise that shrinks with its length."""

    def __init__(self):
        self.config = PlannerConfig()
        self.edits = 0

    def plan(self, image, mask):
        return plan_tokens(image, mask, 8, "s,m,l", self.config)

    def dense(self, truth, inside, seed=0):
        rng = np.random.default_rng(seed)
        return np.clip(truth.astype(int) + rng.integers(-4, 5, truth.shape), 0, 255).astype(np.uint8)

    def edit(self, selection, truth, inside, seed=0):
        self.edits += 1
        plan = self.plan(truth, inside)
        rng = np.random.default_rng([seed, plan.length, self.config.context_seed])
        amplitude = max(1, 4000 // plan.length)
        image = np.clip(self.dense(truth, inside, seed).astype(int) + rng.integers(-amplitude, amplitude + 1, truth.shape), 0, 255)
        kept = np.zeros(plan.grid, bool)
        kept.reshape(-1)[plan.keep_indices.numpy()] = True
        return SelectionEdit(image.astype(np.uint8), plan.length, kept)


def test_study_logs_every_edit_once_and_resumes(tmp_path):
    variants = study_variants(draws=2)
    log = tmp_path / "study.jsonl"
    fake = FakeAblation()
    args = (log, 128, ["coffee"], [1], [0, 1], variants)
    records = run_study(fake, *args, progress=lambda _: None)
    n_cases = len({r["case"] for r in records})
    compressed = {r["case"] for r in records if r["variant"] == "dense"}
    per_unit = sum(len(v.draws) for v in variants) + 1  # every draw, and dense
    assert len(records) == len(compressed) * 2 * per_unit + (n_cases - len(compressed))
    assert fake.edits < len(compressed) * 2 * (per_unit - 1)  # identical plans (small masks: exact = padded) edited once
    # a second run finds everything done
    again = FakeAblation()
    assert len(run_study(again, *args, progress=lambda _: None)) == len(records) and again.edits == 0
    # a line logged twice counts once
    log.write_text(log.read_text() + log.read_text().splitlines()[1] + "\n")
    assert len(read_records(log)) == len(records)

    table = selection_table(read_records(log), variants, margin_db=0.2)
    assert table["n_pairs"] == 2 * len(compressed)
    rows = table["rows"]
    assert set(rows) == {v.label for v in variants}
    assert rows["padded/sobel"]["vs_baseline_truth"]["mean"] == 0.0
    # exact plans are never longer, so never slower in FLOPs
    assert rows["exact/sobel"]["ideal_speedup"] >= rows["padded/sobel"]["ideal_speedup"]
    assert table["rule"]["chosen"] in table["rule"]["acceptable"]


def test_context_geometry_puts_the_ring_next_to_the_mask():
    from hilo_export.evaluation.study import context_geometry

    geometry = context_geometry(128, ["coffee"], [1])
    distance = geometry["mean_distance_tokens"]
    assert geometry["cases"] > 0 and geometry["overlap_with_ring"]["ring"] == 1.0
    assert 1.0 <= distance["ring"] <= min(distance["sobel"], distance["random"])
