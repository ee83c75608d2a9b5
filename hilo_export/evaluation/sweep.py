"""``hilo-export bench --sweep``: speedup against fidelity for planner settings, to choose defaults from data.

Each variant changes one knob (or one named combination) from the defaults: sizing (exact, or
padded: spare capacity filled with high-frequency context, as the paper does), the bucket
table, dilation, mask cleanup (opening, pixel-level growth instead of a whole-token dilation),
and how much high-frequency context an exact plan takes. Speed: the FLOP-ideal per-step speedup
on the latency model's grid (1024x1024 flux-shaped by default) over every plan's own length.
Fidelity: in-mask PSNR of HiLo vs dense edits of the reference model, and both against the
truth, run in torch (``PlannedTransformer``) so no engines are built per variant; every noise
seed of the settings, paired per edit (mask, image, seed) with spread. Edits a variant plans into
``full`` are the dense edit itself: counted (``edits_full``), never pooled with compressed ones.

Marked (``chosen_variant``): the fastest variant (geometric mean of the three ideal speedups)
that keeps every fidelity target in every category: HiLo within ``PSNR_VS_DENSE_TARGET_DB`` of
dense, and its PSNR to the truth within ``PSNR_TO_TRUTH_MARGIN_DB`` of dense's; failing that,
the fastest above the PSNR floor; failing that, the most faithful. The planner's sizing and
context defaults follow the paired rule of ``stats.choose_variant`` instead (scripts/selection.py,
docs/selection.md); the per-edit ``paired`` fields here give the spread to judge the rest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..files import atomic_path
from ..model.loading import text_len_for, token_size_for
from ..planning.buckets import FULL
from ..planning.plan import PlannerConfig, plan_tokens
from .errors import EvaluationError
from .fidelity import Fidelity
from .flops import StepFlops
from .latency import plan_categories
from .masks import CATEGORY_RATIOS, mask_suite
from .settings import PSNR_TO_TRUTH_MARGIN_DB, PSNR_VS_DENSE_TARGET_DB, BenchSettings, eval_image, model_config
from .stats import EditPairs, paired

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = "s,m,l"


@dataclass(frozen=True)
class Variant:
    label: str
    config: PlannerConfig
    buckets: str = DEFAULT_BUCKETS


FINE_BUCKETS = "s=0.1,m=0.2,l=0.3,xl=0.45,xxl=0.6,xxxl=0.75"


def variants() -> list[Variant]:
    """Padded and exact sizing, then knobs on exact sizing (where mask and context set the
    sequence length); the one equal to the planner's defaults is labelled so."""
    padded = replace(PlannerConfig(), sizing="padded")
    base = replace(PlannerConfig(), sizing="exact")
    cleaned = replace(base, dilation=0, open_radius=0.125, grow_radius=0.25)  # RegionE's erode-then-grow, in tokens
    table = [
        Variant("padded (spare capacity filled)", padded),
        Variant(f"padded, buckets {FINE_BUCKETS}", padded, FINE_BUCKETS),
        Variant("exact sizing", base),
        Variant(f"exact, buckets {FINE_BUCKETS}", base, FINE_BUCKETS),
        Variant("exact, dilation 0", replace(base, dilation=0)),
        Variant("exact, dilation 2", replace(base, dilation=2)),
        Variant("exact, pixel growth 1/4 token, no token dilation", replace(base, dilation=0, grow_radius=0.25)),
        Variant("exact, pixel growth 1/2 token, no token dilation", replace(base, dilation=0, grow_radius=0.5)),
        Variant("exact, opening 1/8 token", replace(base, open_radius=0.125)),
        Variant("exact, opening 1/8 + growth 1/4, no token dilation", cleaned),
        Variant("exact, growth 1/4 + coverage 5%, no token dilation", replace(base, dilation=0, grow_radius=0.25, min_coverage=0.05)),
        Variant("exact, no high-frequency context", replace(base, max_high_freq=0.0)),
        Variant("exact, high-frequency context <= 5% of the grid", replace(base, max_high_freq=0.05)),
        Variant("exact, high-frequency threshold 0.12", replace(base, freq_threshold=0.12)),
        Variant("exact, growth 1/4, no dilation, context <= 5%", replace(base, dilation=0, grow_radius=0.25, max_high_freq=0.05)),
        Variant("exact, growth 1/2, no dilation, context <= 5%", replace(base, dilation=0, grow_radius=0.5, max_high_freq=0.05)),
    ]
    defaults = PlannerConfig()
    return [replace(v, label=f"{v.label} (defaults)") if (v.config, v.buckets) == (defaults, DEFAULT_BUCKETS) else v
            for v in table]


def run_sweep(settings: BenchSettings, progress: Callable[[str], None] = log.info,
              labels: list[str] | None = None) -> dict[str, Any]:
    """Every variant (or those named in ``labels``); writes sweep.json, sweep.md and sweep.png to ``settings.out``."""
    from ..reference.model import TOKEN_SIZE
    from ..reference.pipeline import ReferenceInpaintPipeline
    from ..runtime.pipeline import PlannedTransformer

    flops = StepFlops.count(model_config(settings.latency_model), text_len_for(settings.latency_model))
    latency_token = token_size_for(settings.latency_model)
    latency_grid = (settings.latency_resolution[1] // latency_token) * (settings.latency_resolution[0] // latency_token)
    pipe = ReferenceInpaintPipeline.from_reference(settings.fidelity_model)
    pipe.set_progress_bar_config(disable=True)
    stock = pipe.transformer
    suite = mask_suite(settings.fidelity_resolution, settings.fidelity_masks, seed=1)
    pictures = {name: eval_image(name, settings.fidelity_resolution) for name in settings.fidelity_images or settings.images}

    def edit(variant: Variant | None, image, mask, seed):
        config = variant.config if variant else PlannerConfig()
        pipe.transformer = PlannedTransformer(stock, TOKEN_SIZE, variant.buckets if variant else FULL, config, fill="zero")
        try:
            return pipe(image, mask, steps=settings.steps, seed=seed, dense=variant is None)
        finally:
            pipe.transformer = stock

    dense = {(m.name, name, seed): edit(None, image, m.mask > 0, seed).image
             for m in suite for name, image in pictures.items() for seed in settings.seeds}
    reference_truth: dict[str, dict[tuple, float]] = {}  # the first variant's per-edit PSNR to the truth, per category
    results = []
    chosen = variants() if labels is None else [v for v in variants() if v.label in labels]
    if labels is not None and len(chosen) != len(labels):
        known = [v.label for v in variants()]
        raise EvaluationError(f"unknown sweep variants {sorted(set(labels) - set(known))}; known: {known}")
    for variant in chosen:
        def plan(image, mask, variant=variant):
            return plan_tokens(image, mask, latency_token, variant.buckets, variant.config)

        planned = plan_categories(plan, settings.latency_resolution, settings.per_category, settings.images)
        entry: dict[str, Any] = {"label": variant.label, "planner": variant.config.to_dict(), "buckets": variant.buckets,
                                 "categories": {}}
        for cat in planned:
            cost = float(np.mean([flops(p.length) for p in cat.plans]))  # every plan at its own length
            fid, pairs, full = Fidelity(), EditPairs(), 0
            for item in (m for m in suite if m.category == cat.name):
                inside = item.mask > 0
                for name, image in pictures.items():
                    if plan_tokens(image, inside, TOKEN_SIZE, variant.buckets, variant.config).bucket == FULL:
                        full += len(settings.seeds)  # the dense edit itself: never pooled with compressed ones
                        continue
                    for seed in settings.seeds:
                        twin = dense[(item.name, name, seed)]
                        hilo = edit(variant, image, inside, seed)
                        fid.add("mask_hilo_vs_dense", hilo.image, twin, inside)
                        fid.add("mask_hilo_vs_truth", hilo.image, image, inside)
                        fid.add("mask_dense_vs_truth", twin, image, inside)
                        fid.kept_ratio.append(hilo.plan.kept_ratio)
                        pairs.add((item.name, name, seed), hilo.image, twin, image, inside)
            truth = pairs.column("hilo_vs_truth")
            reference_truth.setdefault(cat.name, truth)
            entry["categories"][cat.name] = {
                "ideal_speedup": flops(latency_grid) / cost,
                "bucket_mix": cat.bucket_mix(),
                "token_ratio_mean": float(np.mean([p.kept_ratio for p in cat.plans])),
                "psnr_mask_hilo_vs_dense": fid.psnr("mask_hilo_vs_dense"),
                "psnr_mask_hilo_vs_truth": fid.psnr("mask_hilo_vs_truth"),
                "psnr_mask_dense_vs_truth": fid.psnr("mask_dense_vs_truth"),
                "fidelity_token_ratio_mean": float(np.mean(fid.kept_ratio)) if fid.kept_ratio else None,
                "edits_full": full,
                # per edit, paired by mask, image and seed: spread to dense, truth gap, and the
                # difference to the first variant's PSNR to the truth
                "paired": {**pairs.summary(), "vs_first_variant_truth": paired(truth, reference_truth[cat.name]).to_dict()},
            }
        progress(f"sweep {variant.label}: " + ", ".join(
            f"{c} {v['ideal_speedup']:.2f}x / {v['psnr_mask_hilo_vs_dense'] or float('inf'):.1f} dB"
            for c, v in entry["categories"].items()))
        results.append(entry)
    sweep = {"settings": {**asdict(settings), "out": str(settings.out), "engines_root": str(settings.engines_root)},
             "variants": results}
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(sweep, indent=1) + "\n")
    _plot(sweep, out / "sweep.png")
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(sweep_markdown(sweep))
    return sweep


def sweep_markdown(sweep: dict[str, Any]) -> str:
    chosen = chosen_variant(sweep)
    lines = ["| variant | " + " | ".join(f"{c}: ideal speedup / tokens / PSNR vs dense / truth gap" for c in CATEGORY_RATIOS)
             + " | geo-mean speedup | keeps the targets |",
             "|---|" + "---|" * (len(CATEGORY_RATIOS) + 2)]
    for v in sweep["variants"]:
        cells = []
        for c in CATEGORY_RATIOS:
            e = v["categories"][c]
            db = "no compressed edit" if e["psnr_mask_hilo_vs_dense"] is None else f"{e['psnr_mask_hilo_vs_dense']:.1f} dB"
            per_edit = (e.get("paired") or {}).get("truth_gap") or {}
            gap = (f"{per_edit['mean']:+.2f} ± {per_edit['sd']:.2f} dB" if per_edit.get("n", 0) > 1
                   else "-" if truth_gap(e) is None else f"{truth_gap(e):+.2f} dB")
            cells.append(f"{e['ideal_speedup']:.2f}x / {e['token_ratio_mean']:.0%} / {db} / {gap}")
        label = f"**{v['label']}** (chosen)" if v["label"] == chosen else v["label"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_speedup(v):.2f}x | {'yes' if keeps_targets(v) else 'no'} |")
    return "\n".join(lines) + "\n"


def truth_gap(e: dict[str, Any]) -> float | None:
    """How far HiLo's in-mask PSNR to the truth falls below dense's (dB; None when identical)."""
    if e.get("psnr_mask_dense_vs_truth") is None or e.get("psnr_mask_hilo_vs_truth") is None:
        return None
    return e["psnr_mask_dense_vs_truth"] - e["psnr_mask_hilo_vs_truth"]


def keeps_targets(v: dict[str, Any], floor_db: float = PSNR_VS_DENSE_TARGET_DB,
                  margin_db: float = PSNR_TO_TRUTH_MARGIN_DB) -> bool:
    """Every category: HiLo at least ``floor_db`` from dense, and within ``margin_db`` of dense's PSNR to the truth."""
    for e in v["categories"].values():
        db, gap = e["psnr_mask_hilo_vs_dense"], truth_gap(e)
        if (db is not None and db < floor_db) or (gap is not None and gap > margin_db):
            return False
    return True


def mean_speedup(v: dict[str, Any]) -> float:
    """Geometric mean of the categories' ideal speedups."""
    return float(np.exp(np.mean([np.log(e["ideal_speedup"]) for e in v["categories"].values()])))


def chosen_variant(sweep: dict[str, Any], floor_db: float = PSNR_VS_DENSE_TARGET_DB) -> str | None:
    """The fastest variant (geometric mean of the ideal speedups) that keeps every fidelity target
    (``keeps_targets``) in every category: how the planner's defaults are picked. When none keeps
    them all, the fastest that holds the ``floor_db`` floor to dense everywhere (the truth gap is
    then reported as missed). When none holds the floor either, the most faithful: the highest
    worst-category PSNR to dense (a default must exist; the report says which targets it misses).
    None only for a sweep without variants."""
    fine = [v for v in sweep["variants"] if keeps_targets(v, floor_db)]
    if not fine:
        fine = [v for v in sweep["variants"] if keeps_targets(v, floor_db, margin_db=float("inf"))]
    if fine:
        return max(fine, key=mean_speedup)["label"]
    best = max(sweep["variants"], key=worst_psnr_vs_dense, default=None)
    return best["label"] if best else None


def worst_psnr_vs_dense(v: dict[str, Any]) -> float:
    """The lowest category's in-mask PSNR of HiLo vs dense (identical edits count as infinite)."""
    values = [e["psnr_mask_hilo_vs_dense"] for e in v["categories"].values()]
    return min(float("inf") if db is None else db for db in values)


def _plot(sweep: dict[str, Any], path: Path, floor_db: float = PSNR_VS_DENSE_TARGET_DB) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = chosen_variant(sweep, floor_db)
    markers = "osD^v<>pPX*h"
    fig, axes = plt.subplots(1, len(CATEGORY_RATIOS), figsize=(12, 4.4), dpi=100, sharey=True)
    for ax, category in zip(axes, CATEGORY_RATIOS):
        for i, v in enumerate(sweep["variants"]):
            e = v["categories"][category]
            db = e["psnr_mask_hilo_vs_dense"] or 60.0  # identical edits drawn at the top
            # one colour and marker per variant, named once in the shared legend: no labels to overlap
            ax.scatter(e["ideal_speedup"], db, s=26, marker=markers[i % len(markers)], color=f"C{i % 10}", label=v["label"])
            if v["label"] == chosen:
                ax.scatter(e["ideal_speedup"], db, s=160, facecolors="none", edgecolors="black", linewidths=1.5,
                           label="chosen (fastest keeping the fidelity targets)")
        ax.axhline(floor_db, color="gray", linestyle="--", linewidth=1, label=f"{floor_db:.0f} dB floor")
        ax.set_title(f"{category} masks")
        ax.set_xlabel("ideal per-step speedup (FLOPs)")
    axes[0].set_ylabel("in-mask PSNR HiLo vs dense (dB)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(labels) - 1) // 4), 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
