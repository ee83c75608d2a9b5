"""Before/after a distillation, on the reference model: paired edits by case and seed (development tooling).

For each held-out photo, mask-suite mask and seed it runs the original model dense (the teacher) and
with HiLo, and the distilled model dense and with HiLo, for each planner variant, then pools in-mask
PSNR per category:

    teacher HiLo vs teacher dense (before), student HiLo vs teacher dense (after),
    student HiLo vs truth, teacher dense vs truth, student dense vs teacher dense

    python scripts/distill_compare.py --student OUT_FOLDER --out compare.json [--per-category 2 --seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hilo_export.evaluation.ablation import Ablation
from hilo_export.evaluation.masks import CATEGORY_RATIOS, mask_suite
from hilo_export.evaluation.metrics import Pooled, psnr
from hilo_export.evaluation.settings import eval_image
from hilo_export.model.loading import load_reference, reference_weights_dir
from hilo_export.planning import PlannerConfig
from hilo_export.reference.model import load_decoder

VARIANTS = {
    "padded": PlannerConfig(),
    "exact": PlannerConfig(sizing="exact"),
    "exact-d0": PlannerConfig(sizing="exact", dilation=0),  # less context: the cheaper variant
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, action="append", required=True,
                        help="a distilled reference model's folder (repeat: several, e.g. checkpoints along a run)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--images", default="coffee")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.resolution, args.resolution)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    models = {"teacher": load_reference(), **{f"student{i}": load_reference(p) for i, p in enumerate(args.student)}}
    students = [who for who in models if who != "teacher"]
    decoder = load_decoder(reference_weights_dir())
    runs = {(who, v): Ablation(model, decoder, config=VARIANTS[v]) for who, model in models.items() for v in variants}
    suite = mask_suite(size, args.per_category, seed=1)  # the bench's fidelity masks
    pooled = {c: Pooled() for c in CATEGORY_RATIOS}
    kept: dict[str, list[float]] = {f"{c}/{v}": [] for c in CATEGORY_RATIOS for v in variants}
    paired: dict[str, list[float]] = {f"{who}/{c}/{v}": [] for who in students for c in CATEGORY_RATIOS for v in variants}
    start = time.perf_counter()
    for item in suite:
        inside = item.mask > 0
        for name in args.images.split(","):
            truth = eval_image(name, size)
            for seed in seeds:
                teacher_dense = runs["teacher", variants[0]].dense(truth, inside, seed)
                fid = pooled[item.category]
                fid.add("teacher_dense_vs_truth", teacher_dense, truth, inside)
                for who in students:
                    student_dense = runs[who, variants[0]].dense(truth, inside, seed)
                    fid.add(f"{who}_dense_vs_teacher_dense", student_dense, teacher_dense, inside)
                for v in variants:
                    before = runs["teacher", v].edit("hilo", truth, inside, seed)
                    fid.add(f"{v}/teacher_hilo_vs_teacher_dense", before.image, teacher_dense, inside)
                    fid.add(f"{v}/teacher_hilo_vs_truth", before.image, truth, inside)
                    kept[f"{item.category}/{v}"].append(before.tokens / (size[0] // 8) ** 2)
                    for who in students:
                        after = runs[who, v].edit("hilo", truth, inside, seed)
                        fid.add(f"{v}/{who}_hilo_vs_teacher_dense", after.image, teacher_dense, inside)
                        fid.add(f"{v}/{who}_hilo_vs_truth", after.image, truth, inside)
                        # per case and seed: how much closer to the teacher's dense edit distillation brought HiLo's
                        paired[f"{who}/{item.category}/{v}"].append(
                            psnr(after.image, teacher_dense, inside) - psnr(before.image, teacher_dense, inside))
        print(f"{item.name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    table = {c: {key: _round(p.psnr(key)) for key in sorted(p.sq)} for c, p in pooled.items()}
    report = {"students": {who: str(p) for who, p in zip(students, args.student)}, "resolution": args.resolution,
              "per_category": args.per_category, "images": args.images.split(","), "seeds": seeds,
              "variants": {v: VARIANTS[v].to_dict() for v in variants}, "psnr_in_mask_db": table,
              "gain_db_mean_ci95": {k: _ci(v) for k, v in paired.items()},
              "sequence_share": {k: _round(float(np.mean(v)), 3) for k, v in kept.items()},
              "wall_seconds": round(time.perf_counter() - start, 1), "threads": args.threads}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"psnr": table, "gain": report["gain_db_mean_ci95"]}, indent=1))


def _ci(values: list[float]) -> list[float] | None:
    """Mean paired gain and its 95% bootstrap interval (2000 resamples of the cases)."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return None
    rng = np.random.default_rng(0)
    means = rng.choice(values, (2000, len(values))).mean(axis=1)
    return [_round(float(np.mean(values))), _round(float(np.percentile(means, 2.5))), _round(float(np.percentile(means, 97.5)))]


def _round(value, digits: int = 2):
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    main()
