"""Before/after a distillation on the reference model: edits paired by case and noise seed.

    python scripts/distill_compare.py --student reference-hilo=FOLDER --log compare.jsonl \
        --cache teacher-dense/ --out docs/distill
    python scripts/distill_compare.py --student step100=FOLDER100 --student-variants exact --no-student-dense ...

A case is a bundled held-out photo with one suite mask (by default 3 photos x the small, medium and
large masks of suite seeds 1 and 2: 18 cases), each edited with every noise seed (0, 1). For each
pair the original model (the teacher) edits densely and with HiLo under every planner variant
(before); every student edits densely, with every variant, and with the other context policies
(after). Each edit's in-mask PSNR against the teacher's dense edit and against the truth goes to
``--log`` as one JSON line (a cut run resumes; a further student reuses the teacher's lines and
its dense edits, kept in ``--cache``). The paired table (95% CIs, Student's t) goes to
``--out``/compare.json and compare.md and is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hilo_export.evaluation.ablation import Ablation
from hilo_export.evaluation.flops import FLUX1_DEV, StepFlops
from hilo_export.evaluation.masks import CATEGORY_RATIOS, mask_suite
from hilo_export.evaluation.metrics import psnr
from hilo_export.evaluation.settings import eval_image
from hilo_export.evaluation.stats import paired_stats
from hilo_export.files import atomic_path
from hilo_export.model.loading import load_reference, reference_weights_dir
from hilo_export.planning import PlannerConfig
from hilo_export.reference.model import TOKEN_SIZE, load_decoder

DEFAULT = PlannerConfig()  # exact sizing, random context: the engines' defaults
VARIANTS = {
    "padded": replace(DEFAULT, sizing="padded"),
    "exact": DEFAULT,
    # no token dilation: the variant whose FLOP ideal reaches 2.9x / 1.9x on medium / large masks
    "cheap": replace(DEFAULT, dilation=0),
}
POLICIES = {"exact/sobel": replace(DEFAULT, context="sobel"), "exact/ring": replace(DEFAULT, context="ring")}
DENSE = "dense"
TARGET_DB = 30.0  # HiLo in the mask vs the original model's dense edit, every category
MARGIN_DB = 0.2  # HiLo vs truth may trail the original dense edit vs truth by at most this


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", action="append", default=[], help="LABEL=FOLDER of a distilled reference model (repeat)")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the teacher's dense edits")
    parser.add_argument("--out", type=Path, help="folder for compare.json and compare.md")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--photos", default="coffee,chelsea,rocket")
    parser.add_argument("--suite-seeds", default="1,2")
    parser.add_argument("--noise-seeds", default="0,1")
    parser.add_argument("--student-variants", default=",".join([*VARIANTS, *POLICIES]))
    parser.add_argument("--no-student-dense", action="store_true", help="skip the students' dense edits")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--analyze-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    students = dict(s.split("=", 1) for s in args.student)
    if not args.analyze_only:
        run(args, students)
    records = read_log(args.log)
    report = analyze(records, args.resolution)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "compare.json") as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        with atomic_path(args.out / "compare.md") as tmp:
            tmp.write_text(markdown(report))
    print(markdown(report))


def cases(args) -> list[tuple[str, str, str, np.ndarray]]:
    size = (args.resolution, args.resolution)
    out = []
    for photo in args.photos.split(","):
        for suite_seed in (int(s) for s in args.suite_seeds.split(",")):
            for item in mask_suite(size, 1, seed=suite_seed):
                out.append((f"{photo}/{item.name}/suite{suite_seed}", photo, item.category, item.mask > 0))
    return out


def run(args, students: dict[str, str]) -> None:
    size = (args.resolution, args.resolution)
    n_grid = (args.resolution // TOKEN_SIZE) ** 2
    decoder = load_decoder(reference_weights_dir())
    models = {"teacher": load_reference(), **{label: load_reference(Path(folder)) for label, folder in students.items()}}
    runs = {who: Ablation(model, decoder) for who, model in models.items()}
    wanted = {"teacher": list(VARIANTS), **{label: args.student_variants.split(",") for label in students}}
    done = {_key(r) for r in read_log(args.log)}
    args.cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(args.log, "a") as log:
        for case, photo, category, inside in cases(args):
            truth = eval_image(photo, size)
            for noise in (int(s) for s in args.noise_seeds.split(",")):
                edits = []  # (model, variant, image, tokens, bucket, seconds)
                teacher_dense = None
                cached = args.cache / f"{case.replace('/', '--')}--noise{noise}.npy"
                for who, ablation in runs.items():
                    todo = [v for v in wanted[who] if (who, case, v, noise) not in done]
                    dense_todo = (who, case, DENSE, noise) not in done and (who == "teacher" or not args.no_student_dense)
                    if not todo and not dense_todo:
                        continue
                    if teacher_dense is None:
                        tick = time.perf_counter()
                        if cached.exists():
                            teacher_dense = np.load(cached)
                        else:
                            teacher_dense = runs["teacher"].dense(truth, inside, noise)
                            np.save(cached, teacher_dense)
                        if ("teacher", case, DENSE, noise) not in done:
                            edits.append(("teacher", DENSE, teacher_dense, n_grid, "full", time.perf_counter() - tick))
                    if dense_todo and who != "teacher":
                        tick = time.perf_counter()
                        image = ablation.dense(truth, inside, noise)
                        edits.append((who, DENSE, image, n_grid, "full", time.perf_counter() - tick))
                    for variant in todo:
                        ablation.config = {**VARIANTS, **POLICIES}[variant]
                        tick = time.perf_counter()
                        edit = ablation.edit("hilo", truth, inside, noise)
                        edits.append((who, variant, edit.image, edit.tokens, ablation.plan(truth, inside).bucket,
                                      time.perf_counter() - tick))
                for who, variant, image, tokens, bucket, seconds in edits:
                    record = {"model": who, "case": case, "category": category, "variant": variant, "noise_seed": noise,
                              "tokens": int(tokens), "bucket": bucket, "seconds": round(seconds, 2),
                              "psnr_mask_vs_teacher_dense": _db(psnr(image, teacher_dense, inside)),
                              "psnr_mask_vs_truth": _db(psnr(image, truth, inside))}
                    log.write(json.dumps(record) + "\n")
                log.flush()
            print(f"{case} done ({time.perf_counter() - start:.0f} s)", flush=True)


def read_log(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    records = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records.setdefault(_key(record), record)
    return list(records.values())


def _key(r: dict) -> tuple:
    return r["model"], r["case"], r["variant"], r["noise_seed"]


def _db(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


def analyze(records: list[dict], resolution: int) -> dict:
    """Per student and category: means of per-edit PSNR and paired differences with 95% CIs."""
    table = defaultdict(dict)  # (model, variant) -> {(case, noise): record}
    for r in records:
        table[r["model"], r["variant"]][r["case"], r["noise_seed"]] = r
    students = sorted({m for m, _ in table if m != "teacher"})
    flops = StepFlops.count(FLUX1_DEV, 512)
    n_grid = (resolution // TOKEN_SIZE) ** 2
    categories = [*CATEGORY_RATIOS, "all"]

    def column(model: str, variant: str, metric: str, category: str) -> dict:
        """Per pair; HiLo edits planned into ``full`` are the dense edit and left out."""
        return {k: r[metric] for k, r in table[model, variant].items()
                if (category == "all" or r["category"] == category) and r[metric] is not None
                and not (r["bucket"] == "full" and variant != DENSE)}

    def diff(a: dict, b: dict) -> dict:
        keys = [k for k in a if k in b]
        return paired_stats([a[k] - b[k] for k in keys])

    def mean(a: dict) -> dict:
        return paired_stats(list(a.values()))

    configs = {**VARIANTS, **POLICIES}
    report = {"resolution": resolution, "pairs": len(table["teacher", DENSE]),
              "variants": {v: c.to_dict() for v, c in configs.items()}, "students": {}}
    truth_dense = {c: column("teacher", DENSE, "psnr_mask_vs_truth", c) for c in categories}
    report["teacher_dense_vs_truth"] = {c: mean(truth_dense[c]) for c in categories}
    report["ideal_speedup"] = {v: {c: _ideal(table["teacher", v], c, flops, n_grid) for c in categories} for v in VARIANTS}
    report["before"] = {v: {c: {"vs_dense": mean(column("teacher", v, "psnr_mask_vs_teacher_dense", c)),
                                "vs_truth_minus_dense": diff(column("teacher", v, "psnr_mask_vs_truth", c), truth_dense[c]),
                                "full": _full(table["teacher", v], c)}
                            for c in categories} for v in VARIANTS}
    for s in students:
        out = {"dense_vs_teacher_dense": {c: mean(column(s, DENSE, "psnr_mask_vs_teacher_dense", c)) for c in categories}}
        for v in [*VARIANTS, *POLICIES]:
            if not table[s, v]:
                continue
            out[v] = {}
            for c in categories:
                after = column(s, v, "psnr_mask_vs_teacher_dense", c)
                before = column("teacher", v, "psnr_mask_vs_teacher_dense", c) if v in VARIANTS else {}
                out[v][c] = {"vs_dense": mean(after), "gain": diff(after, before) if before else None,
                             "vs_truth": mean(column(s, v, "psnr_mask_vs_truth", c)),
                             "vs_truth_minus_dense": diff(column(s, v, "psnr_mask_vs_truth", c), truth_dense[c]),
                             "minus_random": diff(after, column(s, "exact", "psnr_mask_vs_teacher_dense", c))
                             if v in POLICIES else None}
            out[v]["targets"] = _targets(out[v]) if v in VARIANTS else None
        report["students"][s] = out
    return report


def _ideal(rows: dict, category: str, flops, n_grid: int) -> float | None:
    tokens = [r["tokens"] for r in rows.values() if category == "all" or r["category"] == category]
    return round(flops(n_grid) / float(np.mean([flops(t) for t in tokens])), 2) if tokens else None


def _full(rows: dict, category: str) -> int:
    return sum(1 for r in rows.values() if r["bucket"] == "full" and (category == "all" or r["category"] == category))


def _targets(by_category: dict) -> dict:
    """Met only where the spread clears it: the CI's lower end at least 30 dB, and above -0.2 dB."""
    out = {}
    for c in CATEGORY_RATIOS:
        vs_dense, truth = by_category[c]["vs_dense"], by_category[c]["vs_truth_minus_dense"]
        out[c] = {"vs_dense_30db": bool(vs_dense["ci95"] and vs_dense["ci95"][0] >= TARGET_DB),
                  "vs_truth_within_0.2db": bool(truth["ci95"] and truth["ci95"][0] > -MARGIN_DB)}
    return out


def _cell(stats: dict | None, signed: bool = False) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    ci = stats.get("ci95")
    return fmt.format(stats["mean"]) + (f" ({fmt.format(ci[0])}..{fmt.format(ci[1])})" if ci else "")


def markdown(report: dict) -> str:
    cats = [*CATEGORY_RATIOS, "all"]
    head = "| | " + " | ".join(cats) + " |\n|---|" + "---|" * len(cats)
    lines = [(f"{report['pairs']} pairs (case x noise seed) at {report['resolution']} px; in-mask PSNR, dB: mean of "
              "per-edit values (95% CI, Student's t); differences paired by case and noise seed."), "",
             "Before (the original model):", "", head,
             "| dense vs truth | " + " | ".join(_cell(report["teacher_dense_vs_truth"][c]) for c in cats) + " |"]
    for v, rows in report["before"].items():
        lines.append(f"| {v}: HiLo vs dense | " + " | ".join(_cell(rows[c]["vs_dense"]) for c in cats) + " |")
        lines.append(f"| {v}: HiLo vs truth, minus dense's | "
                     + " | ".join(_cell(rows[c]["vs_truth_minus_dense"], True) for c in cats) + " |")
        lines.append(f"| {v}: FLOP-ideal speedup (Flux.1-dev, same grid) | "
                     + " | ".join(f"{report['ideal_speedup'][v][c]:.2f}x" for c in cats) + " |")
    for s, out in report["students"].items():
        lines += ["", f"After ({s}), against the original model's dense edit:", "", head,
                  "| dense vs original dense | " + " | ".join(_cell(out["dense_vs_teacher_dense"][c]) for c in cats) + " |"]
        for v in [*VARIANTS, *POLICIES]:
            if v not in out:
                continue
            rows = out[v]
            lines.append(f"| {v}: HiLo vs original dense | " + " | ".join(_cell(rows[c]["vs_dense"]) for c in cats) + " |")
            if v in VARIANTS and any(rows[c]["gain"] for c in cats):
                lines.append(f"| {v}: gain over the original's HiLo | "
                             + " | ".join(_cell(rows[c]["gain"], True) for c in cats) + " |")
            lines.append(f"| {v}: HiLo vs truth, minus original dense's | "
                         + " | ".join(_cell(rows[c]["vs_truth_minus_dense"], True) for c in cats) + " |")
            if v in POLICIES:
                lines.append(f"| {v} minus exact (random), vs original dense | "
                             + " | ".join(_cell(rows[c]["minus_random"], True) for c in cats) + " |")
        for v in VARIANTS:
            if v in out and out[v]["targets"]:
                met = out[v]["targets"]
                lines.append("")
                lines.append(f"Targets, {v}: " + "; ".join(
                    f"{c}: >= 30 dB {'met' if met[c]['vs_dense_30db'] else 'not met'}, "
                    f"within 0.2 dB of dense vs truth {'met' if met[c]['vs_truth_within_0.2db'] else 'not met'}"
                    for c in CATEGORY_RATIOS))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
